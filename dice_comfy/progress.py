"""A training run as ComfyUI's UI shows it: one progress bar over the teacher's sampling and the training steps,
with the loss curve as the bar's preview image, Cancel honoured at every step, and checkpoints in models/dice."""

from __future__ import annotations

import logging

import comfy.utils
import torch

from dice_core.fileformat import RefinerBundle, save_refiner
from dice_core.plots import loss_curve_image
from dice_core.training import TrainConfig, TrainingEvents

from . import internals
from .paths import prefixed_path

log = logging.getLogger("ComfyUI-DICE")


def comfy_progress_events(cfg: TrainConfig, resume: RefinerBundle | None, filename_prefix: str) -> TrainingEvents:
    """ComfyUI's side of a run: one progress bar over teacher sampling and training (with a loss-plot preview),
    Cancel checked at every step, and checkpoints in models/dice/<prefix>_checkpoint.safetensors."""
    checkpoint_path = prefixed_path(filename_prefix) + "_checkpoint.safetensors"
    start = resume.train_step if resume is not None else 0
    training_steps = cfg.steps - start
    pbar = comfy.utils.ProgressBar(training_steps)
    every = max(25, cfg.steps // 20)
    history: list[float] = list(resume.loss_history) if resume is not None else []
    teacher = {"total": 0}  # the teacher reports its own total; training steps come after it on the same bar

    def save_checkpoint(bundle: RefinerBundle) -> None:
        save_refiner(checkpoint_path, bundle)
        log.info("DICE: checkpoint at step %d written to %s", bundle.train_step, checkpoint_path)

    def on_teacher_progress(done: int, total: int) -> None:
        internals.throw_if_interrupted()
        teacher["total"] = total
        pbar.update_absolute(done, total + training_steps)

    def on_step(step: int, value: float) -> None:
        history.append(value)
        preview = ("PNG", _pil(loss_curve_image(history)), 512) if step % every == 0 else None
        pbar.update_absolute(teacher["total"] + step - start, teacher["total"] + training_steps, preview)
        internals.throw_if_interrupted()

    return TrainingEvents(on_step=on_step, on_teacher_progress=on_teacher_progress, save_checkpoint=save_checkpoint)


def _pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray((image[0].numpy() * 255).clip(0, 255).astype("uint8"))
