"""One training run on a ComfyUI model: the prompts' conditioning, the teacher data, dice_core's loop.

Shared by the DICE Train Refiner node, the command-line trainer, the toy-world benchmark and the tests,
so there is one implementation of the algorithm.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace

import torch

from dice_core.families import FamilyInfo, check_same_family
from dice_core.fileformat import RefinerBundle
from dice_core.refiner import CLIP_CHUNK, Refiner
from dice_core.training import (
    SINGLE_PROCESS,
    Collective,
    PromptBank,
    TrainConfig,
    TrainingData,
    TrainingEvents,
    sharpening_pattern,
    teacher_trajectories,
    train_refiner,
)

from . import internals
from .bridge import ComfyDenoiser, family_for, family_of, model_fingerprint, trainable_view

log = logging.getLogger("ComfyUI-DICE")


@dataclass
class SessionOptions:
    """How one run gets its data and runs the model. The defaults are the Train node's."""

    width: int = 512  # image size of the data-free teacher samples
    height: int = 512
    frames: int = 1  # video families: frames per teacher sample
    latents: torch.Tensor | None = None  # real images (VAE-encoded), one per prompt: the paper's setting
    resume: RefinerBundle | None = None  # continue this refiner, with its optimizer state and step count
    gradient_checkpointing: bool = False
    autocast_dtype: torch.dtype | None = None  # CUDA: the frozen model's compute precision if it is float32
    # Samples per data-free teacher call (default cfg.batch_size). The data's order depends on it, so a fixed
    # value gives the same data on any number of ranks.
    teacher_batch_size: int | None = None
    # Negative-aware training: more uc entries besides uc_entry (which stays the refiner's default uc, the
    # empty prompt unless a negative is connected). Every prompt is paired with every one of them, and the
    # teacher's target for a pair is CFG with that pair's negative as uc, so samples_per_prompt, and with it
    # the teacher's cost, counts per pair. None or []: the paper's way, uc_entry only.
    negatives: list[list] | None = None


@dataclass
class SessionResult:
    bundle: RefinerBundle
    losses: list[float]
    pattern: torch.Tensor
    family: str


def latent_shape(model_patcher, width: int, height: int, frames: int = 1) -> tuple[int, ...]:
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


def new_bundle(embed_dim: int, seed: int, info: FamilyInfo, uc: torch.Tensor, fingerprint: str,
               guidance_reference: float | None = None, stage_edges: tuple[float, ...] = ()) -> RefinerBundle:
    """A freshly initialised refiner (seeded) for this family, with the uc it was trained against; a dial
    refiner if guidance_reference is given, a timestep-aware one if stage_edges are."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = Refiner(embed_dim, guidance_reference=guidance_reference, stage_edges=stage_edges)
    return RefinerBundle(
        module=module,
        family=info.name,
        keep_rule=info.keep_rule,
        pad_to=info.pad_to,
        null_uc=uc.float().cpu().clone(),
        pad_token=uc[0, -1].clone() if info.pad_to else None,
        base_model_hash=fingerprint,
    )


def run_training(
    model_patcher,
    prompts: list[list],
    uc_entry: list,
    cfg: TrainConfig,
    options: SessionOptions | None = None,
    events: TrainingEvents | None = None,
    collective: Collective = SINGLE_PROCESS,
) -> SessionResult:
    """prompts: one CONDITIONING entry [tensor (1,T,D), dict] per prompt; uc_entry likewise.

    ComfyUI runs nodes under torch.inference_mode; everything here runs outside it, on copies of the
    conditioning that autograd may use, so the caller's tensors are never touched.

    Distributed (the command-line trainer under torchrun): cfg.batch_size is per rank, each rank samples
    only its block of the teacher data, and the collective gathers every rank's blocks in rank order.
    """
    cfg.validate()
    options = options or SessionOptions()
    if not prompts:
        raise ValueError("no training prompts: give at least one prompt (one per line)")
    with torch.inference_mode(False), torch.enable_grad():
        prompts = [_copy_entry_for_autograd(e) for e in prompts]
        uc_entry = _copy_entry_for_autograd(uc_entry)
        resume = _copy_bundle_for_autograd(options.resume) if options.resume is not None else None
        negatives = [_copy_entry_for_autograd(e) for e in options.negatives or []]
        return _train_on_copies(model_patcher, prompts, uc_entry, cfg,
                                replace(options, resume=resume, negatives=negatives), events or TrainingEvents(), collective)


def _copy_entry_for_autograd(entry: list) -> list:
    """A CONDITIONING entry whose tensors are ordinary tensors: inference tensors cannot enter autograd."""
    extras = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in entry[1].items()}
    return [entry[0].clone(), extras]


def _copy_bundle_for_autograd(bundle: RefinerBundle) -> RefinerBundle:
    """A copy whose tensors are ordinary (not inference) tensors; the cached original stays untouched."""
    clone = copy.copy(bundle)
    module = Refiner(**bundle.module.config())
    module.load_state_dict({k: v.clone() for k, v in bundle.module.state_dict().items()})
    clone.module = module
    clone.null_uc = bundle.null_uc.clone() if bundle.null_uc is not None else None
    clone.pad_token = bundle.pad_token.clone() if bundle.pad_token is not None else None
    clone.loss_history = list(bundle.loss_history)
    if bundle.optimizer_state:
        clone.optimizer_state = {"tensors": {k: v.clone() for k, v in bundle.optimizer_state["tensors"].items()},
                                 "meta": bundle.optimizer_state.get("meta", {})}
    return clone


def _starting_bundle(model_patcher, info: FamilyInfo, embed_dim: int, uc: torch.Tensor, cfg: TrainConfig,
                     resume: RefinerBundle | None) -> RefinerBundle:
    """The refiner to resume, after checking it fits this model, or a new one."""
    if resume is None:
        return new_bundle(embed_dim, cfg.seed, info, uc, model_fingerprint(model_patcher), cfg.guidance_reference(),
                          tuple(cfg.timestep_stages))
    check_same_family(resume.family, info.name)
    if resume.module.stage_edges != tuple(cfg.timestep_stages):
        raise ValueError(
            f"the refiner to resume has timestep stage edges {list(resume.module.stage_edges)}, but these settings ask "
            f"for {list(cfg.timestep_stages)}: resume with the timestep stages it was trained with"
        )
    if resume.module.guidance_reference != cfg.guidance_reference():
        kind = "a dial refiner" if resume.module.guidance is not None else "a single-scale refiner"
        raise ValueError(
            f"the refiner to resume is {kind} (reference scale {resume.module.guidance_reference}), but these settings ask "
            f"for {cfg.guidance_reference()}: resume with the guidance range and guidance_scale it was trained with"
        )
    if resume.embed_dim != embed_dim:
        raise ValueError(
            f"the refiner to resume was trained for embedding dim {resume.embed_dim} ({resume.family}), "
            f"but this model's conditioning has dim {embed_dim} ({info.name})"
        )
    if resume.null_uc is None:
        resume.null_uc = uc.float().cpu().clone()
    if resume.train_step >= cfg.steps:
        raise ValueError(
            f"the refiner to resume has already done {resume.train_step} steps; set steps above that to train more"
        )
    return resume


@dataclass
class TrainingPairs:
    """What the teacher and the student index: one row per prompt, or, in negative-aware training, one row per
    (prompt, negative) pair, prompt-major. The rows share the entries' objects, so pairing copies no tensor."""

    prompts: list[list]  # the prompt entry of each row
    uc_entries: list[list]  # the negative entry of each row
    negatives: list[list]  # the distinct negatives; [0] is the default uc
    negative_of: torch.Tensor | None  # (rows,) index into negatives; None with one negative

    @classmethod
    def build(cls, prompts: list[list], uc_entry: list, negatives: list[list]) -> TrainingPairs:
        if not negatives:
            return cls(prompts, [uc_entry] * len(prompts), [uc_entry], None)
        ucs = [uc_entry, *negatives]
        rows = [(p, k) for p in prompts for k in range(len(ucs))]
        return cls([p for p, _ in rows], [ucs[k] for _, k in rows], ucs, torch.tensor([k for _, k in rows]))

    @property
    def per_prompt(self) -> int:
        return len(self.negatives)


def _check_latents(model_patcher, latents: torch.Tensor, num_prompts: int) -> None:
    expected = model_patcher.model.latent_format.latent_channels
    ndim = 1 + len(latent_shape(model_patcher, 64, 64))
    if latents.ndim != ndim or latents.shape[1] != expected:
        layout = "(batch, channels, frames, height, width)" if ndim == 5 else "(batch, channels, height, width)"
        raise ValueError(
            f"latents have shape {tuple(latents.shape)}, but {family_of(model_patcher)} uses {layout} latents with "
            f"{expected} channels: encode the images with this checkpoint's VAE"
        )
    if latents.shape[0] != num_prompts:
        raise ValueError(f"{latents.shape[0]} latents but {num_prompts} captions: give exactly one caption per image")


def _training_data(model_patcher, denoiser: ComfyDenoiser, num_prompts: int, cfg: TrainConfig, options: SessionOptions,
                   events: TrainingEvents, collective: Collective) -> tuple[TrainingData, TrainConfig]:
    """Real images noised at random levels each step (the paper's setting), or the teacher's own trajectories."""
    if options.latents is not None:
        x0 = model_patcher.model.process_latent_in(options.latents.clone().float())
        return TrainingData(x=x0, idx=torch.arange(num_prompts)), replace(cfg, data="noised")
    teacher_cfg = replace(cfg, batch_size=options.teacher_batch_size or cfg.batch_size)
    shape = latent_shape(model_patcher, options.width, options.height, options.frames)
    data = teacher_trajectories(denoiser, num_prompts, shape, teacher_cfg, events.on_teacher_progress,
                                keep_states=cfg.data == "trajectory", shard=(collective.rank, collective.world_size))
    return collective.gather_training_data(data), cfg


def _train_on_copies(model_patcher, prompts: list[list], uc_entry: list, cfg: TrainConfig, options: SessionOptions,
                     events: TrainingEvents, collective: Collective) -> SessionResult:
    """run_training, on conditioning and a resumed refiner that are the caller's copies, outside inference mode."""
    embed_dim = prompts[0][0].shape[-1]
    info = family_for(model_patcher)  # a guidance-distilled or unknown family stops here, with a sentence
    device = internals.torch_device()
    # The shared MODEL itself where it can train; on 0.33 with dynamic VRAM, core's non-dynamic copy.
    model_patcher = internals.trainable_patcher(model_patcher)
    bundle = _starting_bundle(model_patcher, info, embed_dim, uc_entry[0], cfg, options.resume)
    bundle.module.to(device)

    pairs = TrainingPairs.build(prompts, uc_entry, options.negatives)
    if cfg.negative_prompts and len(cfg.negative_prompts) != len(options.negatives):
        raise ValueError(f"the config names {len(cfg.negative_prompts)} negative prompts but "
                         f"{len(options.negatives)} negative entries were given")
    denoiser = ComfyDenoiser(model_patcher, pairs.prompts, pairs.uc_entries, device, bundle.pad_to, bundle.pad_token,
                             options.autocast_dtype)
    bank = PromptBank(c=denoiser.student_bank().float(), uc=bundle.pad(uc_entry[0]).float(), lengths=denoiser.student_lengths,
                      negatives=[bundle.pad(n[0]).float() for n in pairs.negatives] if pairs.negative_of is not None else None,
                      negative_of=pairs.negative_of)
    if options.latents is not None:
        _check_latents(model_patcher, options.latents, len(prompts))
        # Each image is the data of every pair its caption is in.
        options = replace(options, latents=options.latents.repeat_interleave(pairs.per_prompt, dim=0))

    with trainable_view(model_patcher, options.gradient_checkpointing):
        data, cfg = _training_data(model_patcher, denoiser, len(pairs.prompts), cfg, options, events, collective)
        result = train_refiner(bundle, denoiser, bank, data, cfg, events, collective)
        pattern = sharpening_pattern(result.bundle, bank)
    bundle.module.to("cpu")
    return SessionResult(bundle=result.bundle, losses=result.losses, pattern=pattern, family=info.name)


def token_groups(num_tokens: int, keep_rule: str) -> list[str]:
    """Labels for the sharpening plot: the kept start token of each CLIP chunk, every other position."""
    if keep_rule == "clip_chunk_start":
        return ["start" if t % CLIP_CHUNK == 0 else "token" for t in range(num_tokens)]
    return ["token"] * num_tokens
