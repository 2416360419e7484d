"""The DICE training loop in pure torch. The diffusion model is reached only through a `Denoiser`,
so ComfyUI (dice_comfy/bridge.py), the command-line trainer and the tests share this one loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import torch

from .fileformat import RefinerBundle
from .refiner import Refiner, append_dims, check_stage_edges, refine

# The paper's recipe, and the one the toy world measured as better (see BENCHMARKS.md):
# train on states of the teacher's own CFG trajectories, one timestep per sample, x0-space loss,
# a higher learning rate with warm-up and cosine decay.
RECIPES = {
    "paper": dict(data="noised", timestep="shared", loss_space="eps", lr=2e-4, schedule="constant", warmup=0),
    "dice-pack": dict(data="trajectory", timestep="per_sample", loss_space="x0", lr=3e-3, schedule="cosine", warmup=50),
}
DEFAULT_RECIPE = "dice-pack"
# Compute precision for a model loaded in float32, by the name the node's and the CLI's option use.
AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def guidance_range(low: float, high: float) -> tuple[float, float] | None:
    """The dial's range from the node's and the CLI's two numbers, where 0 and 0 mean no dial."""
    if not low and not high:
        return None
    if not (1.0 <= low < high):
        raise ValueError(f"the guidance range needs 1 <= min < max, got min {low:g} and max {high:g} (0 and 0: no dial)")
    return (float(low), float(high))


def parse_stage_edges(text: str) -> tuple[float, ...]:
    """Timestep stage edges from the node's and the CLI's text, e.g. "0.08, 0.24, 0.5"; empty: one stage."""
    parts = text.replace(",", " ").split()
    try:
        edges = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"timestep stages must be numbers between 0 and 1 separated by commas, e.g. 0.08, 0.24, 0.5; "
                         f"got {text!r}") from None
    return check_stage_edges(edges)


def prompt_lines(lines) -> list[str]:
    """Training prompts from text lines, one per line: blank lines and lines starting with # are skipped
    (the node's text box, a prompts file, and the command-line trainer read prompts the same way)."""
    stripped = (line.strip() for line in lines)
    return [p for p in stripped if p and not p.startswith("#")]


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    guidance_scale: float = 5.0
    lr: float = 3e-3
    lr_end: float = 1e-5
    weight_decay: float = 0.01
    schedule: str = "cosine"  # constant | cosine
    warmup: int = 50
    loss: str = "l1"  # l1 | l2
    loss_space: str = "x0"  # eps (the paper) | x0 (eps error times sigma, capped)
    x0_cap: float = 5.0
    timestep: str = "per_sample"  # per_sample | shared (the paper: one timestep per batch)
    data: str = "trajectory"  # trajectory (teacher CFG states) | noised (x0 noised at random levels)
    teacher_steps: int = 20
    samples_per_prompt: int = 4
    seed: int = 0
    save_every: int = 0
    recipe: str = DEFAULT_RECIPE
    # Negative-aware training: the negative prompts trained against besides the default uc (the empty
    # prompt), recorded in the file so DICE Refine Conditioning knows which negatives the refiner has seen.
    negative_prompts: tuple[str, ...] = ()
    # The guidance dial: train a dial refiner on scales w drawn uniformly from [low, high], one per teacher
    # trajectory (or per sample, on real latents); guidance_scale is then its default, the reference. None:
    # one scale, guidance_scale, with the paper's architecture.
    guidance_range: tuple[float, float] | None = None
    # Where a dial is trained on teacher trajectories, which scale each training sample's target uses:
    # "trajectory", the one its trajectory was sampled at; "resampled", a fresh w from the range at every
    # draw. CFG is linear in w, so a state's target at any w is its trajectory's target plus (w' - w) times
    # its guidance gap x0(c) - x0(uc), kept with the state: many scales per state, at no extra teacher calls
    # (one more latent per state in memory). Not the default: in the toy world it came closer to CFG's images at
    # w = 7 and 9 and farther at w = 3 (dial 2-10, 1500 steps, validation seeds).
    dial_targets: str = "trajectory"
    # Timestep-aware refinement: the inner edges, in ComfyUI's sampling percents, of the ranges that each get their
    # own refiner (dice_core.refiner.stage_ranges); () is the paper's one refiner for every step. Each training
    # step draws batch_size states from every stage, so a step costs the stages' count times the refiner work of
    # one refiner, at no extra teacher calls. Needs the teacher's trajectories (data "trajectory") with per-sample
    # timesteps, where each state's stage is known from its sigma.
    timestep_stages: tuple[float, ...] = ()

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        choices = {
            "schedule": ("constant", "cosine"),
            "loss": ("l1", "l2"),
            "loss_space": ("eps", "x0"),
            "timestep": ("per_sample", "shared"),
            "data": ("trajectory", "noised"),
            "dial_targets": ("trajectory", "resampled"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        check_stage_edges(self.timestep_stages)
        if self.timestep_stages and (self.data, self.timestep) != ("trajectory", "per_sample"):
            raise ValueError(
                "timestep stages train on the teacher's own trajectories with per-sample timesteps (the dice-pack recipe); "
                f"this config has data {self.data!r} and timestep {self.timestep!r}. Use the dice-pack recipe, without "
                "real latents, or train one stage"
            )
        if self.guidance_range is not None:
            low, high = self.guidance_range
            if not (1.0 <= low < high and low <= self.guidance_scale <= high):
                raise ValueError(
                    f"the guidance range must satisfy 1 <= low < high with guidance_scale {self.guidance_scale:g} inside "
                    f"it, got [{low:g}, {high:g}]; set guidance_scale to the dial's default, inside the range"
                )

    def guidance_reference(self) -> float | None:
        """The dial refiner's reference scale (its default w), or None for a single-scale refiner."""
        return float(self.guidance_scale) if self.guidance_range is not None else None

    @classmethod
    def from_recipe(cls, recipe: str = DEFAULT_RECIPE, **overrides) -> TrainConfig:
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        cfg = cls(recipe=recipe, **RECIPES[recipe])
        return replace(cfg, **overrides)

    @classmethod
    def from_inputs(cls, recipe: str, loss: str, family_loss: str, lr: float | None = None, **settings) -> TrainConfig:
        """The config the Train node's widgets and the CLI's flags ask for: the recipe's values, then the user's.
        loss "auto" is the family's own choice (family_loss); lr None (the node's 0) keeps the recipe's rate."""
        if lr is not None:
            settings["lr"] = lr
        return cls.from_recipe(recipe, loss=family_loss if loss == "auto" else loss, **settings)

    def as_dict(self) -> dict:
        return asdict(self)


class Denoiser(Protocol):
    """What the loop needs from a diffusion model. Predictions are denoised x0, as ComfyUI returns."""

    def sigma_schedule(self, steps: int) -> torch.Tensor: ...  # descending, ends with 0

    def random_sigmas(self, n: int, generator: torch.Generator) -> torch.Tensor: ...

    def noise_latent(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...

    # The sigma at a sampling percent, as ComfyUI's timestep-range entries turn start/end_percent into a sigma;
    # needed only by timestep-aware refiners, to know which stage a state belongs to.
    def sigma_at_percent(self, percent: float) -> float: ...

    def teacher(self, x: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def student(self, x: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor, c: torch.Tensor) -> torch.Tensor: ...


@dataclass
class PromptBank:
    """Prompt embeddings as the student sees them (padded where the family needs it) and the uc.

    Negative-aware training pairs every prompt with every negative in a list: a row of c is then one
    (prompt, negative) pair, and negative_of says which of `negatives` is that row's uc. Negatives keep
    their own token counts (a T5 negative is as long as its text), so rows are refined in groups that
    share a negative rather than against a padded stack, which would let padding into the attention."""

    c: torch.Tensor  # (N, T, D)
    uc: torch.Tensor  # (1, T', D): the uc of every row, or the default one (negatives[0]) in negative-aware training
    # Each prompt's own token count where prompts keep their lengths (T5, LLM encoders); the rows of c
    # are zero-filled past it. None: every row is T tokens long.
    lengths: torch.Tensor | None = None
    negatives: list[torch.Tensor] | None = None  # each (1, T_k, D); negatives[0] is uc
    negative_of: torch.Tensor | None = None  # (N,) long: the index into negatives of each row's uc

    def __len__(self) -> int:
        return self.c.shape[0]

    def to(self, device) -> PromptBank:
        """The bank on the training device, once, not a host-to-device copy per step."""
        negatives = [n.to(device) for n in self.negatives] if self.negatives is not None else None
        return replace(self, c=self.c.to(device), uc=self.uc.to(device), negatives=negatives)

    def refine_rows(self, module: Refiner, idx: torch.Tensor, alpha: float, keep_rule: str, family: str = "unknown",
                    guidance: torch.Tensor | None = None, stage: torch.Tensor | None = None):
        """c' of the rows idx, each against its own uc (the one uc, or its pair's negative); guidance: each
        row's scale w, for a dial refiner; stage: each row's timestep stage, for a timestep-aware one."""
        c = self.c[idx.to(self.c.device)]
        if self.negative_of is None:
            return refine(module, c, self.uc, alpha, keep_rule, family, guidance, stage)
        which = self.negative_of[idx.cpu()]
        parts, order = [], []
        for k in which.unique().tolist():
            rows = (which == k).nonzero()[:, 0]
            w = guidance[rows.to(guidance.device)] if guidance is not None else None
            st = stage[rows.to(stage.device)] if stage is not None else None
            parts.append(refine(module, c[rows.to(c.device)], self.negatives[k], alpha, keep_rule, family, w, st))
            order.append(rows)
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts)[torch.cat(order).argsort().to(c.device)]


@dataclass
class TrainingData:
    """Cached teacher states. trajectory: x_t, sigma, prompt index and CFG x0 target. noised: x0 only."""

    x: torch.Tensor
    idx: torch.Tensor
    sigma: torch.Tensor | None = None
    target: torch.Tensor | None = None
    step_of_sample: torch.Tensor | None = None  # which sampler step a trajectory state came from
    guidance: torch.Tensor | None = None  # the scale w of each state's trajectory, where a dial is trained
    guidance_gap: torch.Tensor | None = None  # x0(c) - x0(uc) of each state, where dial targets are resampled
    stage: torch.Tensor | None = None  # each state's timestep stage, where a timestep-aware refiner is trained

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def stage_count(self) -> int:
        return 1 if self.stage is None else int(self.stage.max()) + 1


def stage_of_sigma(sigma: torch.Tensor, edge_sigmas: list[float]) -> torch.Tensor:
    """Each sigma's timestep stage: how many stage edges the sampling has passed at it. A sampling percent
    turns into a sigma that falls as the percent rises, and ComfyUI applies a range entry while sigma is at or
    below its start's sigma, so a sigma below an edge's sigma is in a later stage."""
    stage = torch.zeros(sigma.shape, dtype=torch.long)
    for edge in edge_sigmas:
        stage += (sigma.float().cpu() < edge).long()
    return stage


def with_stages(data: TrainingData, denoiser: Denoiser, module: Refiner) -> TrainingData:
    """The data with each state's stage, for a timestep-aware refiner; unchanged for one stage."""
    if module.stage_count == 1:
        return data
    edge_sigmas = [float(denoiser.sigma_at_percent(p)) for p in module.stage_edges]
    stage = stage_of_sigma(data.sigma, edge_sigmas)
    empty = sorted(set(range(module.stage_count)) - set(stage.unique().tolist()))
    if empty:
        raise ValueError(
            f"timestep stage(s) {empty} of edges {list(module.stage_edges)} hold none of the teacher's "
            f"{int(data.step_of_sample.max()) + 1} sampler steps: move the edges apart or raise teacher_steps"
        )
    return replace(data, stage=stage)


@dataclass
class TrainingEvents:
    """What a training run reports, in one object (as k-diffusion passes one callback): each may be None.
    on_step may raise to stop the run (ComfyUI's cancel does); the last full step is then checkpointed."""

    on_step: Callable[[int, float], None] | None = None  # after each update: (steps done, loss)
    on_teacher_progress: Callable[[int, int], None] | None = None  # data-free teacher sampling: (done, total)
    save_checkpoint: Callable[[RefinerBundle], None] | None = None  # a resumable snapshot: periodic, and on interruption


class Collective(Protocol):
    """The processes that train one refiner together (torch.distributed under torchrun). Each rank samples its
    block of the teacher data; gather_training_data returns every rank's blocks in rank order, and gradients
    and the logged loss are averaged with all_reduce_mean before each update."""

    rank: int
    world_size: int

    def all_reduce_mean(self, t: torch.Tensor) -> None: ...  # in place

    def gather_training_data(self, data: TrainingData) -> TrainingData: ...


class SingleProcess:
    """The default Collective: one process, where the mean of a tensor is the tensor and gathering returns it."""

    rank = 0
    world_size = 1

    def all_reduce_mean(self, t: torch.Tensor) -> None:
        return None

    def gather_training_data(self, data: TrainingData) -> TrainingData:
        return data


SINGLE_PROCESS = SingleProcess()


def cfg_combine(x0_c: torch.Tensor, x0_uc: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
    """w: one scale, or one per sample (B,). CFG is linear, so combining in x0 space equals combining eps
    and converting."""
    if torch.is_tensor(w):
        w = append_dims(w.to(x0_c), x0_c.ndim)
    return x0_uc + w * (x0_c - x0_uc)


def draw_guidance(cfg: TrainConfig, n: int, generator: torch.Generator) -> torch.Tensor | None:
    """n scales from the dial's range, uniformly; None when training one scale."""
    if cfg.guidance_range is None:
        return None
    low, high = cfg.guidance_range
    return low + (high - low) * torch.rand(n, generator=generator)


@torch.no_grad()
def teacher_trajectories(
    denoiser: Denoiser,
    num_prompts: int,
    latent_shape: tuple[int, ...],
    cfg: TrainConfig,
    progress: Callable[[int, int], None] | None = None,
    keep_states: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> TrainingData:
    """Data-free training data: the teacher samples each prompt at cfg=w with Euler (DDIM for eps
    models) from seeded noise, recording every state with its CFG target and the final x0.

    shard=(rank, world_size): sample only this rank's contiguous block of the batches. Every batch's
    noise is still drawn in order, so the ranks' results concatenated in rank order are the data
    one process would make."""
    sigmas = denoiser.sigma_schedule(cfg.teacher_steps)
    g = torch.Generator().manual_seed(cfg.seed + 7919)
    # The dial's scales come from their own stream, so the noise is the same with or without a dial.
    g_dial = torch.Generator().manual_seed(cfg.seed + 104729)
    idx_all = torch.arange(num_prompts).repeat_interleave(cfg.samples_per_prompt)
    xs, ts, ids, targets, steps_of, finals, scales, gaps = [], [], [], [], [], [], [], []
    keep_gaps = cfg.guidance_range is not None and cfg.dial_targets == "resampled"
    chunks = idx_all.split(max(1, cfg.batch_size))
    mine = shard_range(len(chunks), *shard)
    total = len(mine) * (len(sigmas) - 1)
    done = 0
    if not mine:  # more ranks than batches: an empty block with the right shapes
        empty = torch.zeros((0, *latent_shape))
        xs, ts, ids, targets, steps_of = [empty], [torch.zeros(0)], [idx_all[:0]], [empty], [idx_all[:0]]
        finals, scales = [(empty, idx_all[:0])], [torch.zeros(0)]
        gaps = [empty] if keep_gaps else []
    for k, idx in enumerate(chunks):
        noise = torch.randn((len(idx), *latent_shape), generator=g)
        w = draw_guidance(cfg, len(idx), g_dial)
        if k not in mine:
            continue
        x = denoiser.noise_latent(torch.zeros_like(noise), noise, sigmas[:1].expand(len(idx)))
        for i in range(len(sigmas) - 1):
            s = sigmas[i].expand(len(idx))
            x0_c, x0_uc = denoiser.teacher(x, s, idx)
            # The model may run on a GPU in half precision; the trajectory is integrated where the
            # noise was drawn, in float32, so the data is the same whichever device made it.
            target = cfg_combine(x0_c, x0_uc, cfg.guidance_scale if w is None else w).to(x.device, x.dtype)
            if keep_states:
                xs.append(x.cpu())
                ts.append(s.cpu())
                ids.append(idx)
                targets.append(target.cpu())
                steps_of.append(torch.full((len(idx),), i))
                if w is not None:
                    scales.append(w)
                if keep_gaps:
                    gaps.append((x0_c - x0_uc).to(x.dtype).cpu())
            d = (x - target) / append_dims(s, x.ndim)
            x = x + d * (sigmas[i + 1] - sigmas[i])
            done += 1
            if progress:
                progress(done, total)
        finals.append((x.cpu(), idx))
    if not keep_states:
        return TrainingData(x=torch.cat([f[0] for f in finals]), idx=torch.cat([f[1] for f in finals]))
    return TrainingData(
        x=torch.cat(xs), idx=torch.cat(ids), sigma=torch.cat(ts), target=torch.cat(targets), step_of_sample=torch.cat(steps_of),
        guidance=torch.cat(scales) if scales and cfg.guidance_range is not None else None,
        guidance_gap=torch.cat(gaps) if gaps else None,
    )


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Rank's contiguous block of n work items; the blocks of ranks 0..world_size-1 cover 0..n-1 in order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def lr_at(cfg: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.schedule == "constant":
        return cfg.lr * warm
    return warm * (cfg.lr_end + 0.5 * (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * step / cfg.steps)))


def _step_generator(seed: int, step: int) -> torch.Generator:
    # Each step draws from its own stream, so a resumed run sees exactly the batches it would have.
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def sample_batch(denoiser: Denoiser, data: TrainingData, cfg: TrainConfig, step: int, rank: int = 0, world_size: int = 1):
    """This rank's slice of the step's global batch (batch_size per rank x world_size ranks, and that from every
    timestep stage where a timestep-aware refiner is trained): x, sigma, idx, the CFG target (None on real latents,
    where the teacher runs each step), each sample's scale w (None with one scale) and its stage (None with one).

    The global batch is drawn from one per-step stream and then sliced, so N ranks at batch b see
    exactly the samples one process at batch N*b would: distributed runs match single-process ones.
    """
    batch = _global_batch(denoiser, data, cfg, step, cfg.batch_size * world_size)
    per_rank = cfg.batch_size * data.stage_count
    part = slice(rank * per_rank, (rank + 1) * per_rank)
    return tuple(t[part] if t is not None else None for t in batch)


def _stratified_states(data: TrainingData, n: int, g: torch.Generator) -> torch.Tensor:
    """n states from every timestep stage, interleaved (one of each stage, then the next of each), so the first
    k * stages of them hold k of each: a rank's slice gets its share of every stage."""
    draws = []
    for k in range(data.stage_count):
        pool = (data.stage == k).nonzero()[:, 0]
        draws.append(pool[torch.randint(0, len(pool), (n,), generator=g)])
    return torch.stack(draws, dim=1).reshape(-1)


def _global_batch(denoiser: Denoiser, data: TrainingData, cfg: TrainConfig, step: int, n: int):
    """n states (n per stage, where a timestep-aware refiner is trained): x, sigma, idx, target, guidance, stage."""
    g = _step_generator(cfg.seed, step)
    if cfg.data == "trajectory":
        if data.target is None:
            raise ValueError("trajectory training needs teacher states; build them with teacher_trajectories()")
        if cfg.timestep == "shared":
            # One sampler step for the whole batch, as the paper shares one timestep.
            k = int(torch.randint(0, int(data.step_of_sample.max()) + 1, (1,), generator=g))
            pool = (data.step_of_sample == k).nonzero()[:, 0]
            j = pool[torch.randint(0, len(pool), (n,), generator=g)]
        elif data.stage is not None:
            j = _stratified_states(data, n, g)
            n = len(j)
        else:
            j = torch.randint(0, len(data), (n,), generator=g)
        guidance = data.guidance[j] if data.guidance is not None else None
        target = data.target[j]
        if data.guidance_gap is not None and cfg.dial_targets == "resampled":
            # Drawn last, so the states are the same draws as with the trajectory's own scales.
            fresh = draw_guidance(cfg, n, g)
            target = target + append_dims(fresh - guidance, target.ndim) * data.guidance_gap[j]
            guidance = fresh
        stage = data.stage[j] if data.stage is not None else None
        return data.x[j], data.sigma[j], data.idx[j], target, guidance, stage
    j = torch.randint(0, len(data), (n,), generator=g)
    x0 = data.x[j]
    count = 1 if cfg.timestep == "shared" else n
    sigma = denoiser.random_sigmas(count, g).expand(n) if count == 1 else denoiser.random_sigmas(n, g)
    noise = torch.randn(x0.shape, generator=g)
    guidance = draw_guidance(cfg, n, g)  # drawn last, so the other draws are the same with or without a dial
    return denoiser.noise_latent(x0, noise, sigma), sigma, data.idx[j], None, guidance, None


def distillation_loss(pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Per-sample loss between x0 predictions, expressed in eps or (capped) x0 units."""
    s = append_dims(sigma.to(pred.dtype), pred.ndim)
    d = pred - target
    # eps = (x - x0) / sigma, so an eps error is the x0 error divided by sigma.
    d = d / s if cfg.loss_space == "eps" else d * (cfg.x0_cap / s).clamp(max=1.0)
    per = d.abs() if cfg.loss == "l1" else d.pow(2)
    return per.flatten(1).mean(1)


def optimizer_state_tensors(opt: torch.optim.Optimizer, module: Refiner) -> dict:
    names = {id(p): n for n, p in module.named_parameters()}
    tensors, steps = {}, {}
    for p, st in opt.state.items():
        n = names[id(p)]
        for k in ("exp_avg", "exp_avg_sq"):
            tensors[f"{n}.{k}"] = st[k].detach().float().cpu()
        steps[n] = float(st["step"])
    return {"tensors": tensors, "meta": {"step": steps}}


def restore_optimizer(opt: torch.optim.Optimizer, module: Refiner, state: dict) -> None:
    tensors, steps = state.get("tensors", {}), state.get("meta", {}).get("step", {})
    for n, p in module.named_parameters():
        if f"{n}.exp_avg" not in tensors:
            continue
        opt.state[p] = {
            "step": torch.tensor(float(steps.get(n, 0.0))),
            "exp_avg": tensors[f"{n}.exp_avg"].to(p.device, p.dtype).clone(),
            "exp_avg_sq": tensors[f"{n}.exp_avg_sq"].to(p.device, p.dtype).clone(),
        }


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainResult:
    bundle: RefinerBundle
    losses: list[float] = field(default_factory=list)
    steps_done: int = 0


def train_refiner(
    bundle: RefinerBundle,
    denoiser: Denoiser,
    bank: PromptBank,
    data: TrainingData,
    cfg: TrainConfig,
    events: TrainingEvents | None = None,
    collective: Collective = SINGLE_PROCESS,
) -> TrainResult:
    """Train `bundle.module` in place from `bundle.train_step` up to `cfg.steps`.

    events.on_step may raise (ComfyUI's interrupt does); the current state is then checkpointed with
    events.save_checkpoint before the exception propagates, so a cancel loses nothing. A non-finite
    loss stops without saving it.

    Distributed: each rank samples its share of every global batch, and gradients and the logged loss
    are averaged over the collective's ranks before each update.

    Precision belongs to the denoiser: teacher and student must run the frozen model with the same
    numerics, or the refiner learns the rounding difference. The refiner itself stays in float32
    (2M parameters cost nothing). A denoiser whose model computes in float16 sets
    `needs_grad_scaling`, and the loss is then scaled so small gradients survive the fp16 backward.
    """
    cfg.validate()
    events = events or TrainingEvents()
    on_step, save_checkpoint = events.on_step, events.save_checkpoint
    distributed = collective.world_size > 1
    module = bundle.module
    device = next(module.parameters()).device
    module.train().requires_grad_(True)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if bundle.optimizer_state:
        restore_optimizer(opt, module, bundle.optimizer_state)
    bank = bank.to(device)
    data = with_stages(data, denoiser, module)
    losses = list(bundle.loss_history)
    start = bundle.train_step
    scaler = torch.amp.GradScaler(device.type) if getattr(denoiser, "needs_grad_scaling", False) else None

    def snapshot(step: int) -> RefinerBundle:
        bundle.train_step = step
        bundle.loss_history = losses
        bundle.optimizer_state = optimizer_state_tensors(opt, module)
        bundle.recipe = cfg.as_dict()
        return bundle

    completed = start
    try:
        for step in range(start, cfg.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            x, sigma, idx, target, guidance, stage = sample_batch(denoiser, data, cfg, step, collective.rank,
                                                                  collective.world_size)
            x, sigma = x.to(device), sigma.to(device)
            if target is None:
                x0_c, x0_uc = denoiser.teacher(x, sigma, idx)
                target = cfg_combine(x0_c, x0_uc, cfg.guidance_scale if guidance is None else guidance)
            target = target.to(device)
            c_refined = bank.refine_rows(module, idx, 1.0, bundle.keep_rule, bundle.family, guidance, stage)
            pred = denoiser.student(x, sigma, idx, c_refined)
            loss = distillation_loss(pred.float(), target.float(), sigma, cfg).mean()
            opt.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            if distributed:
                for p in module.parameters():
                    if p.grad is not None:
                        collective.all_reduce_mean(p.grad)
            # Read the loss only once the backward pass is queued: an earlier float() would make the
            # host wait for the forward pass and leave the GPU idle while it launches the backward.
            logged = loss.detach().clone()
            if distributed:
                collective.all_reduce_mean(logged)
            value = float(logged)
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"training loss became {value} at step {step + 1}; stopped without saving this step. "
                    "Lower the learning rate, or train in bf16 or float32; the last periodic checkpoint is kept."
                )
            if scaler:
                scaler.step(opt)  # skips the update when scaled gradients overflowed
                scaler.update()
            else:
                opt.step()
            losses.append(value)
            completed = step + 1
            if save_checkpoint and cfg.save_every and completed % cfg.save_every == 0 and completed < cfg.steps:
                save_checkpoint(snapshot(completed))
            if on_step:
                on_step(completed, value)
    except NonFiniteLossError:
        module.eval().requires_grad_(False)
        raise
    except BaseException:
        # Interrupted (cancel, KeyboardInterrupt, OOM): keep what was learned up to the last full step.
        if save_checkpoint and completed > start:
            save_checkpoint(snapshot(completed))
        module.eval().requires_grad_(False)
        raise
    module.eval().requires_grad_(False)
    snapshot(cfg.steps)
    return TrainResult(bundle=bundle, losses=losses, steps_done=cfg.steps - start)


@torch.no_grad()
def sharpening_pattern(bundle: RefinerBundle, bank: PromptBank) -> torch.Tensor:
    """Mean |c' - c| per token position over the prompts that have that position: the paper's
    "sharpening pattern" (each row against its own uc, where rows pair prompts with negatives; a timestep-aware
    refiner's stages averaged, as each refines the prompt for its share of the sampling)."""
    device = next(bundle.module.parameters()).device
    bank = bank.to(device)
    diffs = []
    for rows in torch.arange(len(bank)).split(64):
        c = bank.c[rows.to(device)]
        per_stage = [(bank.refine_rows(bundle.module, rows, 1.0, bundle.keep_rule, stage=torch.full((len(rows),), k))
                      - c).abs().mean(-1).cpu() for k in range(bundle.module.stage_count)]
        diffs.append(torch.stack(per_stage).mean(0))
    diffs = torch.cat(diffs)
    if bank.lengths is None:
        return diffs.mean(0)
    present = (torch.arange(diffs.shape[1])[None, :] < bank.lengths[:, None]).float()
    return (diffs * present).sum(0) / present.sum(0).clamp(min=1)


@torch.no_grad()
def evaluate_distillation(
    bundle: RefinerBundle, denoiser: Denoiser, bank: PromptBank, data: TrainingData, cfg: TrainConfig, alpha: float = 1.0,
    batch_size: int = 32,
) -> float:
    """Mean distillation loss over cached teacher states (alpha=0: the unrefined cfg=1 prediction)."""
    if data.target is None:
        raise ValueError("evaluation needs trajectory states with cached targets")
    device = next(bundle.module.parameters()).device
    bank = bank.to(device)
    data = with_stages(data, denoiser, bundle.module)
    total, count = 0.0, 0
    for j in torch.arange(len(data)).split(batch_size):
        x, sigma, idx = data.x[j].to(device), data.sigma[j].to(device), data.idx[j]
        guidance = data.guidance[j] if data.guidance is not None else None
        stage = data.stage[j] if data.stage is not None else None
        c = bank.refine_rows(bundle.module, idx, alpha, bundle.keep_rule, guidance=guidance, stage=stage)
        pred = denoiser.student(x, sigma, idx, c)
        total += float(distillation_loss(pred.float(), data.target[j].to(device).float(), sigma, cfg).sum())
        count += len(j)
    return total / count
