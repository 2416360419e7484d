"""One training run on a ComfyUI model: encode prompts, build the teacher data, run dice_core's loop.

Shared by the DICE Train Refiner node, the toy-world benchmark and the command-line trainer, so
there is one implementation of the algorithm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dice_core.families import check_same_family
from dice_core.fileformat import RefinerBundle
from dice_core.refiner import CLIP_CHUNK, Refiner
from dice_core.training import (
    PromptBank,
    TrainConfig,
    TrainingData,
    sharpening_pattern,
    teacher_trajectories,
    train_refiner,
)

from . import comfy_internals
from .comfy_bridge import ComfyDenoiser, family_for, family_of, model_fingerprint

log = logging.getLogger("ComfyUI-DICE")


@dataclass
class SessionResult:
    bundle: RefinerBundle
    losses: list[float]
    pattern: torch.Tensor
    family: str


def _latent_shape(model_patcher, width: int, height: int, frames: int = 1) -> tuple[int, ...]:
    """The latent one data-free teacher sample starts from, as the family's sampler sees it: (C, H, W)
    for image latents, (C, T, H, W) where the latent format is 3-D. T counts the first frame plus one
    latent frame per temporal_ratio frames after it (Wan, HunyuanVideo: 4; LTXV: 8); image families
    with a video latent format (Qwen-Image, Cosmos Predict2 use Wan's) get T = 1, as ComfyUI's sampler
    turns their 4-D empty latent into."""
    info = family_for(model_patcher)
    fmt = model_patcher.model.latent_format
    # 0.33's latent formats state their compression; 0.3.75's do not, so the family table says it.
    spatial = getattr(fmt, "spacial_downscale_ratio", None) or info.spatial_ratio
    plane = (height // spatial, width // spatial)
    if getattr(fmt, "latent_dimensions", 2) != 3:
        return (fmt.latent_channels, *plane)
    temporal = getattr(fmt, "temporal_downscale_ratio", None) or info.temporal_ratio
    latent_frames = (max(1, frames) - 1) // temporal + 1 if info.video else 1
    return (fmt.latent_channels, latent_frames, *plane)


def new_bundle(embed_dim: int, seed: int, family_name: str, keep_rule: str, pad_to, null_uc, pad_token, fingerprint) -> RefinerBundle:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = Refiner(embed_dim)
    return RefinerBundle(
        module=module,
        family=family_name,
        keep_rule=keep_rule,
        pad_to=pad_to,
        null_uc=null_uc,
        pad_token=pad_token,
        base_model_hash=fingerprint,
    )


def run_training(
    model_patcher,
    prompts: list[list],
    uc_entry: list,
    cfg: TrainConfig,
    width: int = 512,
    height: int = 512,
    frames: int = 1,
    latents: torch.Tensor | None = None,
    resume: RefinerBundle | None = None,
    save_checkpoint: Callable[[RefinerBundle], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_teacher_progress: Callable[[int, int], None] | None = None,
    gradient_checkpointing: bool = False,
    autocast_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
    all_reduce_mean: Callable[[torch.Tensor], None] | None = None,
    gather_data: Callable[[TrainingData], TrainingData] | None = None,
    teacher_batch_size: int | None = None,
) -> SessionResult:
    """prompts: one CONDITIONING entry [tensor (1,T,D), dict] per prompt; uc_entry likewise.

    ComfyUI runs nodes under torch.inference_mode; everything here runs outside it, on normal copies
    of the conditioning, so autograd can work without touching the caller's tensors.

    Distributed (the command-line trainer under torchrun): rank, world_size and all_reduce_mean go to
    train_refiner (cfg.batch_size is then per rank). With gather_data, each rank samples only its
    block of the teacher data and gather_data must return every rank's blocks in rank order.
    teacher_batch_size (default cfg.batch_size) batches the data-free teacher sampling; the order of
    its states depends on it, so a fixed value makes runs on any number of ranks see the same data.
    """
    cfg.validate()
    if not prompts:
        raise ValueError("no training prompts: give at least one prompt (one per line)")
    with torch.inference_mode(False), torch.enable_grad():
        prompts = [_normal_entry(e) for e in prompts]
        uc_entry = _normal_entry(uc_entry)
        if resume is not None:
            resume = _normal_bundle(resume)
        dist = dict(rank=rank, world_size=world_size, all_reduce_mean=all_reduce_mean, gather_data=gather_data,
                    teacher_batch_size=teacher_batch_size)
        return _run(model_patcher, prompts, uc_entry, cfg, (width, height, frames), latents, resume, save_checkpoint, on_step,
                    on_teacher_progress, gradient_checkpointing, autocast_dtype, dist)


def _normal_entry(entry: list) -> list:
    extras = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in entry[1].items()}
    return [entry[0].clone(), extras]


def _normal_bundle(bundle: RefinerBundle) -> RefinerBundle:
    """A copy whose tensors are ordinary (not inference) tensors; the cached original stays untouched."""
    import copy

    clone = copy.copy(bundle)
    module = Refiner(bundle.embed_dim, bundle.module.inner_dim, bundle.module.heads)
    module.load_state_dict({k: v.clone() for k, v in bundle.module.state_dict().items()})
    clone.module = module
    clone.null_uc = bundle.null_uc.clone() if bundle.null_uc is not None else None
    clone.pad_token = bundle.pad_token.clone() if bundle.pad_token is not None else None
    clone.loss_history = list(bundle.loss_history)
    if bundle.optimizer_state:
        clone.optimizer_state = {"tensors": {k: v.clone() for k, v in bundle.optimizer_state["tensors"].items()},
                                 "meta": bundle.optimizer_state.get("meta", {})}
    return clone


def _run(model_patcher, prompts, uc_entry, cfg, size, latents, resume, save_checkpoint, on_step,
         on_teacher_progress, gradient_checkpointing, autocast_dtype, dist) -> SessionResult:
    from .comfy_bridge import trainable_view

    embed_dim = prompts[0][0].shape[-1]
    info = family_for(model_patcher)  # a guidance-distilled or unknown family stops here, with a sentence
    pad_token = uc_entry[0][0, -1].clone() if info.pad_to else None
    device = comfy_internals.torch_device()
    # The shared MODEL itself where it can train; on 0.33 with dynamic VRAM, core's non-dynamic copy.
    model_patcher = comfy_internals.trainable_patcher(model_patcher)

    if resume is not None:
        check_same_family(resume.family, info.name)
        if resume.embed_dim != embed_dim:
            raise ValueError(
                f"the refiner to resume was trained for embedding dim {resume.embed_dim} ({resume.family}), "
                f"but this model's conditioning has dim {embed_dim} ({info.name})"
            )
        bundle = resume
        if bundle.null_uc is None:
            bundle.null_uc = uc_entry[0].float().cpu().clone()
        if bundle.train_step >= cfg.steps:
            raise ValueError(
                f"the refiner to resume has already done {bundle.train_step} steps; set steps above that to train more"
            )
    else:
        bundle = new_bundle(
            embed_dim, cfg.seed, info.name, info.keep_rule, info.pad_to, uc_entry[0].float().cpu().clone(), pad_token,
            model_fingerprint(model_patcher),
        )
    bundle.module.to(device)

    denoiser = ComfyDenoiser(model_patcher, prompts, uc_entry, device, bundle.pad_to, bundle.pad_token, autocast_dtype)
    bank = PromptBank(c=denoiser.student_bank().float(), uc=bundle.pad(uc_entry[0]).float(), lengths=denoiser.student_lengths)

    if latents is not None:
        expected = model_patcher.model.latent_format.latent_channels
        ndim = 1 + len(_latent_shape(model_patcher, 64, 64))
        if latents.ndim != ndim or latents.shape[1] != expected:
            layout = "(batch, channels, frames, height, width)" if ndim == 5 else "(batch, channels, height, width)"
            raise ValueError(
                f"latents have shape {tuple(latents.shape)}, but {family_of(model_patcher)} uses {layout} latents with "
                f"{expected} channels: encode the images with this checkpoint's VAE"
            )
        if latents.shape[0] != len(prompts):
            raise ValueError(f"{latents.shape[0]} latents but {len(prompts)} captions: give exactly one caption per image")

    with trainable_view(model_patcher, gradient_checkpointing):
        if latents is not None:
            # Real images: the paper's setting. Noised at random levels each step.
            x0 = model_patcher.model.process_latent_in(latents.clone().float())
            data = TrainingData(x=x0, idx=torch.arange(len(prompts)))
            cfg = TrainConfig(**{**cfg.as_dict(), "data": "noised"})
        else:
            gather = dist["gather_data"]
            teacher_cfg = TrainConfig(**{**cfg.as_dict(), "batch_size": dist["teacher_batch_size"] or cfg.batch_size})
            data = teacher_trajectories(
                denoiser, len(prompts), _latent_shape(model_patcher, *size), teacher_cfg, on_teacher_progress,
                keep_states=cfg.data == "trajectory", shard=(dist["rank"], dist["world_size"]) if gather else (0, 1),
            )
            if gather:
                data = gather(data)
        result = train_refiner(
            bundle, denoiser, bank, data, cfg, on_step=on_step, save_checkpoint=save_checkpoint,
            rank=dist["rank"], world_size=dist["world_size"], all_reduce_mean=dist["all_reduce_mean"],
        )
        pattern = sharpening_pattern(result.bundle, bank)
    bundle.module.to("cpu")
    return SessionResult(bundle=result.bundle, losses=result.losses, pattern=pattern, family=info.name)


def token_groups(num_tokens: int, keep_rule: str) -> list[str]:
    """Labels for the sharpening plot: the kept start token of each CLIP chunk, every other position."""
    if keep_rule == "clip_chunk_start":
        return ["start" if t % CLIP_CHUNK == 0 else "token" for t in range(num_tokens)]
    return ["token"] * num_tokens
