"""Every ComfyUI API the pack calls that is not part of ComfyUI's public node API (comfy_api).

Node code, the training session and the command-line trainer reach ComfyUI's internals only through
this module, so a change in ComfyUI breaks one place, and tests/test_comfy_internals.py exercises
each function here on both supported runtimes (0.3.75 and 0.33.0). Each entry says what it relies on.

Not routed through here: ComfyUI's public objects (ModelPatcher.clone and add_wrapper_with_key,
folder_paths, comfy.utils.ProgressBar, comfy_api.v0_0_2), and the toy world's model definition
(toyworld/comfy_objects.py subclasses comfy.sd1_clip and comfy.latent_formats classes; tested by
tests/test_toyworld.py).
"""

from __future__ import annotations

import contextlib
import logging

import comfy.model_management
import comfy.sampler_helpers
import comfy.samplers
import torch

log = logging.getLogger("ComfyUI-DICE")


def encode_conds(model_patcher, tensor: torch.Tensor, extras: dict, x: torch.Tensor, prompt_type: str) -> list[dict]:
    """One CONDITIONING entry as the model's sampler sees it: each family's extra_conds applied
    (SDXL's pooled and size inputs, PixArt's resolution, ...).

    Relies on: comfy.sampler_helpers.convert_cond([[tensor, dict]]) -> list of cond dicts, and
    comfy.samplers.encode_model_conds(extra_conds, conds, noise, device, prompt_type, latent_image=...),
    the pair CFGGuider uses before sampling (same signatures in 0.3.75 and 0.33.0)."""
    conds = comfy.sampler_helpers.convert_cond([[tensor, extras]])
    return comfy.samplers.encode_model_conds(model_patcher.model.extra_conds, conds, x, x.device, prompt_type,
                                             latent_image=x)


def denoise(model_patcher, conds: list[list[dict]], x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> list:
    """The model's denoised x0 for each list of encoded conds, batched into as few calls as memory allows.

    Relies on: comfy.samplers.calc_cond_batch(model, conds, x, timestep, model_options) returning one
    x0 tensor per entry of conds, and on model_patcher.pre_run() having been called (training_model
    does that)."""
    return comfy.samplers.calc_cond_batch(model_patcher.model, conds, x, sigma, model_options)


def sigma_schedule(model_patcher, steps: int, scheduler: str = "normal") -> torch.Tensor:
    """Relies on: comfy.samplers.calculate_sigmas(model_sampling, scheduler_name, steps), descending, ending in 0."""
    return comfy.samplers.calculate_sigmas(model_patcher.model.model_sampling, scheduler, steps)


def torch_device() -> torch.device:
    """Relies on: comfy.model_management.get_torch_device(), the device ComfyUI samples on."""
    return comfy.model_management.get_torch_device()


def trainable_patcher(model_patcher):
    """The patcher to backpropagate through; never the shared one when that one cannot train.

    ComfyUI 0.33 loads models as ModelPatcherDynamic on GPUs by default (dynamic VRAM, comfy-aimdo):
    weights stream to the GPU per op and its load() refuses full loads, so autograd cannot keep the
    weights it saved for the backward pass. Core's own route for code that needs a plain, fully loaded
    model (hooks on conds, CFGGuider.inner_set_conds) is get_non_dynamic_delegate(): a plain
    ModelPatcher on a separate copy of the weights made by the checkpoint loader, cached on the shared
    patcher so a second training run reuses it. ModelPatcherDynamic turns into a plain ModelPatcher for
    a CPU load device, and 0.3.75 has no is_dynamic(): both get the patcher itself.

    The delegate is rebuilt by the loader recorded in cached_patcher_init, which only core loaders set;
    for any other MODEL the error says what to do instead.

    Relies on: ModelPatcher.is_dynamic(), ModelPatcher.cached_patcher_init and
    ModelPatcherDynamic.get_non_dynamic_delegate() (0.33)."""
    is_dynamic = getattr(model_patcher, "is_dynamic", None)
    if not (callable(is_dynamic) and is_dynamic()):
        return model_patcher
    if getattr(model_patcher, "cached_patcher_init", None) is None:
        raise RuntimeError(
            "DICE Train Refiner needs a plain copy of this model to backpropagate through, and ComfyUI's dynamic VRAM "
            "can only make one for models from its own loaders (Load Checkpoint, Load Diffusion Model). Load the "
            "model with one of those, or start ComfyUI with --disable-dynamic-vram to train."
        )
    log.info("DICE: training through a non-dynamic copy of the model (dynamic VRAM cannot backpropagate)")
    return model_patcher.get_non_dynamic_delegate()


@contextlib.contextmanager
def training_mode():
    """comfy.model_management.in_training is True inside, as TrainLoraNode sets it while it trains.

    Relies on: the module flag `in_training` (0.33; 0.3.75 has none, and then nothing is set). Models
    read it to avoid in-place ops that autograd cannot differentiate (LTXV, SeedVR in 0.33)."""
    had = hasattr(comfy.model_management, "in_training")
    before = getattr(comfy.model_management, "in_training", False)
    if had:
        comfy.model_management.in_training = True
    try:
        yield
    finally:
        if had:
            comfy.model_management.in_training = before


def load_fully(model_patcher) -> None:
    """Relies on: comfy.model_management.load_models_gpu([patcher], force_full_load=True), as TrainLoraNode
    loads the model it trains: every weight resident, none streamed per op."""
    comfy.model_management.load_models_gpu([model_patcher], force_full_load=True)


def checkpoint_gradients(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    """Gradient checkpointing on the highest child modules that have a forward, as TrainLoraNode does.
    Returns the patched modules; undo with uncheckpoint_gradients.

    Relies on: comfy_extras.nodes_train.find_all_highest_child_module_with_forward(module) and patch(m),
    which keeps the original forward in m.org_forward (0.3.75 and 0.33.0; 0.33's patch also takes
    offloading=False)."""
    from comfy_extras.nodes_train import find_all_highest_child_module_with_forward, patch

    modules = find_all_highest_child_module_with_forward(diffusion_model)
    for m in modules:
        patch(m)
    return modules


def uncheckpoint_gradients(model: torch.nn.Module) -> None:
    """Relies on: comfy_extras.nodes_train.unpatch(m), a no-op for modules patch() did not touch."""
    from comfy_extras.nodes_train import unpatch

    for m in model.modules():
        unpatch(m)


def throw_if_interrupted() -> None:
    """Relies on: comfy.model_management.throw_exception_if_processing_interrupted(), which raises the
    server's InterruptProcessingException after the user presses Cancel."""
    comfy.model_management.throw_exception_if_processing_interrupted()


def load_checkpoint(path: str, embedding_directory=None):
    """(ModelPatcher, CLIP, VAE) from a checkpoint file, for the command-line trainer.

    Relies on: comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
    embedding_directory=...) returning a tuple whose first three items are those (0.3.75 and 0.33.0)."""
    import comfy.sd

    out = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
                                                embedding_directory=embedding_directory)
    return out[0], out[1], out[2]


def checkpoint_weight(model_patcher, name: str, current: torch.Tensor) -> torch.Tensor:
    """A diffusion-model weight as the checkpoint holds it, whatever patches (a LoRA) are applied to it right now.

    ComfyUI applies weight patches in place when it loads a patcher, and keeps the checkpoint's value in
    ModelPatcher.backup until it unloads; every clone of a patcher shares that dict, so the base patcher sees what
    a LoRA clone backed up. Relies on: ModelPatcher.backup, keyed by the model's state-dict key
    ("diffusion_model.<name>"), each value a namedtuple whose .weight is the original tensor (0.3.75 and 0.33.0)."""
    saved = getattr(model_patcher, "backup", {}).get(f"diffusion_model.{name}")
    return saved.weight if saved is not None else current


def weight_patches(model_patcher) -> dict:
    """The patches a MODEL applies to its weights when loaded: LoRAs (LoraLoader, LoraLoaderModelOnly), model
    merges, ... Relies on: ModelPatcher.patches, state-dict key -> list of tuples (strength_patch, value,
    strength_model, offset, function), where value is a tensor, a tuple, or a weight adapter whose .weights holds
    its tensors (0.3.75 and 0.33.0)."""
    return dict(getattr(model_patcher, "patches", {}) or {})
