"""DICE Train Refiner: distils the loaded checkpoint's CFG into a refiner, inside ComfyUI."""

from __future__ import annotations

import logging

from comfy_api.v0_0_2 import io, ui

from dice_comfy.bridge import family_for
from dice_comfy.conditioning import training_negative_entries, training_prompt_entries, training_uc_entry
from dice_comfy.paths import NO_PROMPTS_FILE, prompt_files, read_prompts
from dice_comfy.progress import comfy_progress_events
from dice_comfy.session import SessionOptions, run_training, token_groups
from dice_core.plots import loss_curve_image, token_bar_image
from dice_core.training import (
    AUTOCAST_DTYPES,
    DEFAULT_RECIPE,
    RECIPES,
    TrainConfig,
    guidance_range,
    parse_stage_edges,
    prompt_lines,
)

from .library import TRAINING_CATEGORY, placement
from .refiner_nodes import DiceRefiner

log = logging.getLogger("ComfyUI-DICE")


class DiceTrainRefiner(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        recipes = list(RECIPES)
        return io.Schema(
            node_id="DiceTrainRefiner",
            display_name="DICE Train Refiner",
            **placement(TRAINING_CATEGORY, ["cfg distillation", "guidance distillation", "distill cfg",
                                            "train sharpener"]),
            description="Trains a DICE refiner for the connected checkpoint: the checkpoint at cfg=w is the teacher, and "
            "the refiner learns to rewrite prompts so one pass at cfg 1.0 matches it. Data-free by default: the teacher "
            "samples its own training latents from your prompts.",
            inputs=[
                io.Model.Input("model", tooltip="The checkpoint to distil, with the LoRAs you will sample with already loaded: it "
                              "is the frozen CFG teacher and is not modified."),
                io.Clip.Input("clip", optional=True, tooltip="Text encoder of the checkpoint, used to encode the prompts "
                              "and the empty prompt. Optional if 'conditioning' and 'negative' are connected."),
                io.String.Input("prompts", multiline=True, default="a photo of a cat\na watercolor painting of a lighthouse",
                                tooltip="Training prompts, one per line (lines starting with # are ignored). "
                                "Use prompts like the ones you will generate with; a few dozen or more work best."),
                io.Combo.Input("prompts_file", options=prompt_files(), default=NO_PROMPTS_FILE,
                               tooltip="Optional .txt file in ComfyUI's input folder with more prompts, one per line."),
                io.Int.Input("steps", default=1000, min=1, max=1_000_000,
                             tooltip="Optimizer updates (the paper used 8000 at batch 128 on SD1.5). When resuming, the total "
                             "to reach, counting the steps already done."),
                io.Int.Input("batch_size", default=8, min=1, max=1024, tooltip="Samples per update. Larger is smoother but "
                             "needs more memory (gradient checkpointing helps)."),
                io.Float.Input("guidance_scale", default=5.0, min=1.0, max=30.0, step=0.1,
                               tooltip="The CFG scale w the refiner learns to reproduce at cfg 1.0 (the paper: 5)."),
                io.Combo.Input("recipe", options=recipes, default=DEFAULT_RECIPE,
                               tooltip="dice-pack: teacher trajectories, one timestep per sample, x0-space loss, lr 3e-3 with "
                               "cosine decay (best in this pack's measurements). paper: noised latents, one timestep per "
                               "batch, eps loss, constant lr 2e-4 (Zhou et al.)."),
                io.Float.Input("learning_rate", default=0.0, min=0.0, max=1.0, step=0.0001, round=0.00001,
                               tooltip="AdamW learning rate; 0 uses the recipe's (3e-3 dice-pack, 2e-4 paper)."),
                io.Combo.Input("loss", options=["auto", "l1", "l2"], default="auto",
                               tooltip="auto follows the paper per family: L1 for SD1.5-like, L2 for SDXL and others."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seeds the refiner's initial weights, the teacher's noise and the batch order. "
                             "Same seed and inputs on the CPU give the same refiner."),
                io.Int.Input("width", default=512, min=64, max=4096, step=8,
                             tooltip="Image width of the teacher's data-free samples; use the resolution you generate at. "
                             "Video families: the teacher's cost grows with width x height x frames, so train small "
                             "(e.g. 320 x 320, 9 frames) and sample larger."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8, tooltip="Image height of the data-free samples."),
                io.Int.Input("samples_per_prompt", default=4, min=1, max=256,
                             tooltip="Teacher samples (seeds) per prompt in data-free mode."),
                io.Int.Input("teacher_steps", default=20, min=2, max=200,
                             tooltip="Sampling steps of the teacher's data-free runs; each step's state becomes training data."),
                io.Int.Input("save_every", default=0, min=0, max=1_000_000,
                             tooltip="Write a resumable checkpoint to models/dice/<prefix>_checkpoint.safetensors every N "
                             "steps (0: only on cancel). Load it with DICE Load Refiner and connect it to resume_from."),
                io.String.Input("filename_prefix", default="dice_refiner",
                                tooltip="Prefix of the checkpoint file inside models/dice."),
                DiceRefiner.Input("resume_from", optional=True,
                                  tooltip="Continue training this refiner (with its optimizer state and step count)."),
                io.Latent.Input("latents", optional=True,
                                tooltip="Optional real images as latents (VAE Encode), one per prompt line, in the same order: "
                                "the paper's setting. Without them the teacher makes its own."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Optional ready prompt conditioning; each entry is one training prompt."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Optional uc to distil against (e.g. a fixed negative prompt). "
                                      "Default: the empty prompt."),
                io.Boolean.Input("gradient_checkpointing", default=False,
                                 tooltip="Recompute activations in the backward pass. Measured on an H200: SDXL 1024 px at "
                                 "batch 16 needs 15 GB instead of 82 GB for 1.4x the step time."),
                io.Combo.Input("autocast", options=list(AUTOCAST_DTYPES), default="bf16",
                               tooltip="CUDA only, and only for a model ComfyUI loaded in float32: run the frozen model in this "
                               "precision. A model already in fp16/bf16 keeps ComfyUI's precision (fp16 trains with loss "
                               "scaling). Teacher and student always share it; the refiner stays float32."),
                # Last, so the widget order of workflows saved before it existed is unchanged.
                io.Int.Input("frames", default=9, min=1, max=1025, step=1, optional=True,
                             tooltip="Video families only (Wan, LTXV, HunyuanVideo 1.5): frames per data-free teacher sample; "
                             "image families ignore it. Each teacher sample costs about width x height x frames x "
                             "teacher_steps, times 2 for CFG, so few frames at low resolution keep training affordable: "
                             "9 frames are 3 latent frames for Wan and HunyuanVideo, 2 for LTXV."),
                io.String.Input("negative_prompts", multiline=True, default="", optional=True,
                                tooltip="Negative-aware training: negative prompts you will use at sampling time, one per "
                                "line. Each training prompt is paired with each of them and with the empty prompt, and "
                                "the teacher's target is CFG with that negative, so a negative connected to DICE Refine "
                                "Conditioning then acts as it does in CFG. Costs one teacher run per pair: N negatives "
                                "make the teacher sampling N+1 times longer (lower samples_per_prompt to keep it). "
                                "Empty: the paper's way, the empty prompt only."),
                io.Float.Input("guidance_range_min", default=0.0, min=0.0, max=30.0, step=0.1, optional=True,
                               tooltip="The guidance dial: with guidance_range_max, train one refiner for every CFG scale in "
                               "[min, max] (each teacher sample draws its own w), so DICE Refine Conditioning's "
                               "guidance_scale works as a dial. guidance_scale stays its default and must lie in the range. "
                               "Adds a 67K-parameter scale-and-shift of the prompt features; the teacher's cost is unchanged. "
                               "0: one scale, the paper's refiner."),
                io.Float.Input("guidance_range_max", default=0.0, min=0.0, max=30.0, step=0.1, optional=True,
                               tooltip="Top of the dial's range (see guidance_range_min); 0: no dial."),
                io.String.Input("timestep_stages", default="", optional=True,
                                tooltip="Timestep-aware refinement: where the sampling switches to the next refiner, as "
                                "comma-separated percents of the sampling (as ConditioningSetTimestepRange counts them), "
                                "e.g. 0.08, 0.24, 0.5 for four stages. DICE Refine Conditioning then outputs one "
                                "timestep-range entry per stage, still one model pass per step. Each training step trains "
                                "every stage on batch_size samples, so it costs the stage count times as much; the teacher's "
                                "cost is unchanged. Needs the dice-pack recipe without latents. Empty: one refiner for the "
                                "whole sampling, the paper's way (README, 'Timestep stages', has what was measured)."),
            ],
            outputs=[
                DiceRefiner.Output(display_name="refiner", tooltip="The trained refiner: save it or refine conditioning."),
                io.Image.Output(display_name="loss_plot", tooltip="Distillation loss over the steps."),
                io.Image.Output(display_name="sharpening_plot",
                                tooltip="Mean |c' - c| per token position: which tokens the refiner changes."),
            ],
        )

    @classmethod
    def execute(
        cls, model, prompts: str, prompts_file: str, steps: int, batch_size: int, guidance_scale: float, recipe: str,
        learning_rate: float, loss: str, seed: int, width: int, height: int, samples_per_prompt: int, teacher_steps: int,
        save_every: int, filename_prefix: str, gradient_checkpointing: bool, autocast: str, clip=None, resume_from=None,
        latents=None, conditioning=None, negative=None, frames: int = 9, negative_prompts: str = "",
        guidance_range_min: float = 0.0, guidance_range_max: float = 0.0, timestep_stages: str = "",
    ) -> io.NodeOutput:
        info = family_for(model)  # first: a guidance-distilled or unknown family gets its sentence before any work
        entries = training_prompt_entries(clip, read_prompts(prompts, prompts_file), conditioning)
        uc_entry = training_uc_entry(clip, negative)
        negative_texts = tuple(dict.fromkeys(prompt_lines(negative_prompts.splitlines())))
        cfg = TrainConfig.from_inputs(recipe, loss, info.default_loss, learning_rate or None, steps=steps,
                                      batch_size=batch_size, guidance_scale=guidance_scale, seed=seed, save_every=save_every,
                                      samples_per_prompt=samples_per_prompt, teacher_steps=teacher_steps,
                                      negative_prompts=negative_texts,
                                      guidance_range=guidance_range(guidance_range_min, guidance_range_max),
                                      timestep_stages=parse_stage_edges(timestep_stages))
        options = SessionOptions(width=width, height=height, frames=frames,
                                 latents=latents["samples"] if latents is not None else None, resume=resume_from,
                                 gradient_checkpointing=gradient_checkpointing, autocast_dtype=AUTOCAST_DTYPES[autocast],
                                 negatives=training_negative_entries(clip, list(negative_texts)))
        result = run_training(model, entries, uc_entry, cfg, options, comfy_progress_events(cfg, resume_from, filename_prefix))
        labels = token_groups(len(result.pattern), result.bundle.keep_rule)
        log.info("DICE: trained %s; final loss %.4g", result.bundle.describe(), result.losses[-1])
        loss_plot = loss_curve_image(result.losses)
        # The loss plot also previews on the node itself, as core's loss-graph node does, so it is seen without
        # wiring a Preview Image node to the output.
        return io.NodeOutput(
            result.bundle,
            loss_plot,
            token_bar_image(result.pattern, labels, title=f"mean |c' - c| per token ({result.family})"),
            ui=ui.PreviewImage(loss_plot, cls=cls),
        )
