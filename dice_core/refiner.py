"""The DICE refiner ("sharpener" in the paper): c' = c + alpha * R(c, uc).

Parameter names match the paper's official `dice_sharpener.Sharpener` (fc1, attention.to_q/k/v,
attention.to_out.0, fc2) so that weights trained with the paper's code load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CLIP_CHUNK = 77

# Which token positions the refiner must leave untouched.
KEEP_CLIP_CHUNK_START = "clip_chunk_start"  # position 0 of every 77-token CLIP chunk (start token)
KEEP_FIRST = "first"  # only position 0, whatever the length
KEEP_NONE = "none"  # T5 and other encoders without a start token
# Rows that are exactly zero: padding an encoder zeroed (AuraFlow's pile-T5). AuraFlow projects text
# with no bias and then applies a LayerNorm, so a zero row sits at LayerNorm's singular point and any
# change to it is amplified about a thousandfold; the model was trained on those rows being zero.
KEEP_ZERO_ROWS = "zero_rows"
KEEP_RULES = (KEEP_CLIP_CHUNK_START, KEEP_FIRST, KEEP_NONE, KEEP_ZERO_ROWS)


class CrossAttention(nn.Module):
    """Multi-head attention, queries from the prompt, keys and values from the null prompt."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"inner dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        # A Sequential so the key is `to_out.0`, as in the paper's checkpoint (its index 1 is Dropout).
        self.to_out = nn.Sequential(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """context may have batch 1 for any batch of x: one null prompt shared by every prompt is
        projected once and broadcast, not once per prompt."""
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], t.shape[1], h, d // h).transpose(1, 2).expand(b, -1, -1, -1)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)))
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class GuidanceFilm(nn.Module):
    """The guidance dial: the scale w becomes a per-channel scale and shift of the prompt's features (FiLM).

    The last layer starts at zero, so a new dial refiner starts as the paper's refiner with its change
    scaled linearly in w, and training learns what a linear scale gets wrong."""

    def __init__(self, inner_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 2 * inner_dim))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """position (B,): where each w sits in the dial's range; returns scale and shift, each (B, 1, inner)."""
        scale, shift = self.net(position[:, None]).chunk(2, dim=-1)
        return scale[:, None, :], shift[:, None, :]


def check_stage_edges(edges) -> tuple[float, ...]:
    """Timestep stages' inner edges as ComfyUI's sampling percents (0 is the first step, 1 the last), strictly
    increasing inside (0, 1); () is one stage, the paper's single refiner."""
    edges = tuple(float(e) for e in edges)
    if any(not 0 < e < 1 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"timestep stage edges must increase strictly between 0 and 1 (sampling percents), got "
                         f"{', '.join(f'{e:g}' for e in edges)}")
    return edges


def stage_ranges(edges: tuple[float, ...]) -> list[tuple[float, float]]:
    """(start_percent, end_percent) of each stage, as ComfyUI's timestep-range CONDITIONING entries say it."""
    bounds = (0.0, *edges, 1.0)
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass(frozen=True)
class StrengthSchedule:
    """alpha in c' = c + alpha * R(c, uc) over the sampling: `strength` from the first step, `late_strength` from
    `late_from` on, in ComfyUI's sampling percents (0 is the first step, 1 the end). late_from 1 is one strength
    throughout, the paper's way. Two strengths are delivered as two timestep-range CONDITIONING entries, so sampling
    stays one model pass per step."""

    strength: float = 1.0
    late_strength: float = 1.0
    late_from: float = 1.0

    def __post_init__(self):
        for name in ("strength", "late_strength"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a number of at least 0, got {getattr(self, name)}")
        if not 0.0 <= self.late_from <= 1.0:
            raise ValueError(f"late_from is a sampling percent between 0 and 1 (1: one strength throughout), got "
                             f"{self.late_from:g}")

    @property
    def is_constant(self) -> bool:
        return len(self.phases()) == 1

    def phases(self) -> list[tuple[float, tuple[float, float]]]:
        """(strength, (start_percent, end_percent)) of each phase of the sampling, in order; one phase if constant."""
        if self.late_from <= 0.0:
            return [(self.late_strength, (0.0, 1.0))]
        if self.late_from >= 1.0 or self.late_strength == self.strength:
            return [(self.strength, (0.0, 1.0))]
        return [(self.strength, (0.0, self.late_from)), (self.late_strength, (self.late_from, 1.0))]

    def label(self) -> str:
        """"1.5" for one strength, "1>2@0.3" for 1 and then 2 from 30% of the sampling on; parse() reads it back."""
        if self.is_constant:
            return f"{self.phases()[0][0]:g}"
        return f"{self.strength:g}>{self.late_strength:g}@{self.late_from:g}"

    @classmethod
    def parse(cls, text) -> StrengthSchedule:
        early, _, rest = str(text).partition(">")
        if not rest:
            return cls(float(early), float(early))
        late, at, late_from = rest.partition("@")
        if not at:
            raise ValueError(f"a strength schedule reads early>late@percent, e.g. 1>2@0.3; got {text!r}")
        return cls(float(early), float(late), float(late_from))


class Refiner(nn.Module):
    """Linear(D->inner), ReLU, cross-attention (q from c, k/v from uc), ReLU, Linear(inner->D).

    guidance_reference set: a dial refiner, which also reads the guidance scale w. Its prompt features are
    modulated by GuidanceFilm(w), and its change is multiplied by (w - 1) / (reference - 1), so w = 1 gives
    c' = c exactly (CFG at 1 is the plain prompt) and w = reference is where the paper's refiner would be.
    The paper's parameters keep their names; the dial's are under `guidance.`.

    stage_edges set: a timestep-aware refiner, one refiner of this shape per range of the sampling (stage_ranges),
    because the guidance a prompt needs early, while the layout forms, is not the guidance it needs for the
    details at the end. Stage 0 is this module's own layers (so its names stay the paper's), stages 1.. are
    `later_stages.0.`, `later_stages.1.` and so on. Sampling still makes one model pass per step: each stage's
    prompt is its own timestep-range CONDITIONING entry."""

    def __init__(self, embed_dim: int, inner_dim: int = 512, heads: int = 8, guidance_reference: float | None = None,
                 stage_edges: tuple[float, ...] = ()):
        super().__init__()
        self.embed_dim = embed_dim
        self.inner_dim = inner_dim
        self.heads = heads
        self.fc1 = nn.Linear(embed_dim, inner_dim)
        self.attention = CrossAttention(inner_dim, heads)
        self.fc2 = nn.Linear(inner_dim, embed_dim)
        if guidance_reference is not None and not guidance_reference > 1:
            raise ValueError(f"a dial refiner's reference guidance scale must be above 1, got {guidance_reference}")
        self.guidance_reference = guidance_reference
        self.guidance = GuidanceFilm(inner_dim) if guidance_reference is not None else None
        self.stage_edges = check_stage_edges(stage_edges)
        self.later_stages = nn.ModuleList(
            Refiner(embed_dim, inner_dim, heads, guidance_reference) for _ in self.stage_edges
        )

    @property
    def stage_count(self) -> int:
        return 1 + len(self.later_stages)

    def config(self) -> dict:
        """The constructor's arguments: Refiner(**r.config()) is an untrained refiner of the same shape."""
        return dict(embed_dim=self.embed_dim, inner_dim=self.inner_dim, heads=self.heads,
                    guidance_reference=self.guidance_reference, stage_edges=self.stage_edges)

    def stage_module(self, stage: int) -> Refiner:
        if not 0 <= stage < self.stage_count:
            raise ValueError(f"stage {stage} does not exist: this refiner has {self.stage_count} timestep stage(s)")
        return self if stage == 0 else self.later_stages[stage - 1]

    def forward(self, c: torch.Tensor, uc: torch.Tensor, guidance: torch.Tensor | None = None,
                stage: int | torch.Tensor | None = None) -> torch.Tensor:
        """guidance: (B,) scales w, one per prompt; read only by a dial refiner (default: its reference).
        stage: which timestep stage refines, one for all prompts or (B,) one per prompt (default: stage 0)."""
        if stage is None or self.stage_count == 1:
            return self.stage_delta(c, uc, guidance)
        if not torch.is_tensor(stage):
            return self.stage_module(int(stage)).stage_delta(c, uc, guidance)
        w = None if guidance is None or self.guidance is None else self.guidance_per_prompt(guidance, c)
        out = None
        for k in stage.unique().tolist():
            rows = (stage == k).nonzero()[:, 0].to(c.device)
            part = self.stage_module(int(k)).stage_delta(
                c[rows], uc if uc.shape[0] == 1 else uc[rows], None if w is None else w[rows])
            # index_copy (not in place) keeps every stage's part in the graph
            out = (part.new_zeros(c.shape) if out is None else out).index_copy(0, rows, part)
        return out

    def stage_delta(self, c: torch.Tensor, uc: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """R(c, uc) of this module's own layers (stage 0 of a staged refiner)."""
        q = F.relu(self.fc1(c))
        kv = F.relu(self.fc1(uc))
        if self.guidance is None:
            return self.fc2(F.relu(self.attention(q, kv)))
        w = self.guidance_per_prompt(guidance, c)
        reference = self.guidance_reference
        scale, shift = self.guidance((w - reference) / (reference - 1))
        q = q * (1 + scale) + shift
        return self.fc2(F.relu(self.attention(q, kv))) * append_dims((w - 1) / (reference - 1), c.ndim)

    def guidance_per_prompt(self, guidance, c: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(self.guidance_reference if guidance is None else guidance, dtype=c.dtype, device=c.device)
        return w.reshape(-1).expand(c.shape[0]) if w.numel() == 1 else w.reshape(-1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def keep_mask(num_tokens: int, rule: str, device=None) -> torch.Tensor:
    """Boolean (T,) mask, True where the token must stay exactly as the text encoder made it."""
    if rule not in KEEP_RULES:
        raise ValueError(f"unknown kept-token rule {rule!r}; expected one of {KEEP_RULES}")
    mask = torch.zeros(num_tokens, dtype=torch.bool, device=device)
    if rule == KEEP_CLIP_CHUNK_START:
        mask[::CLIP_CHUNK] = True
    elif rule == KEEP_FIRST and num_tokens:
        mask[0] = True
    return mask


def check_embeddings(c: torch.Tensor, uc: torch.Tensor, embed_dim: int, family: str = "unknown") -> None:
    """Raise a clear error for shapes and values the refiner cannot use."""
    for name, t in (("conditioning", c), ("negative/null conditioning", uc)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (batch, tokens, dim) tensor, got {shape}")
        if t.shape[-1] != embed_dim:
            raise ValueError(
                f"{name} has embedding dim {t.shape[-1]}, but this refiner was trained for dim {embed_dim} "
                f"(model family: {family}). Load a refiner trained for the checkpoint you are sampling with."
            )
        if t.shape[1] == 0:
            raise ValueError(f"{name} has no tokens")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf values; check the text encoder and any nodes before this one")
    if uc.shape[0] not in (1, c.shape[0]):
        raise ValueError(
            f"negative/null conditioning has batch {uc.shape[0]}, which cannot pair with the prompt's batch "
            f"{c.shape[0]}: give one negative, or one per prompt"
        )


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) per-sample values shaped (B, 1, ..., 1) to broadcast against a tensor of `ndim` dimensions
    (k-diffusion's idiom): one sigma per latent, whether latents are 4-D images or 5-D video."""
    return values.view(-1, *[1] * (ndim - 1))


def is_zeroed_out(t: torch.Tensor | None) -> bool:
    """An embedding that is exactly zero, as ComfyUI's ConditioningZeroOut makes the negative (SDXL-era and newer
    workflows feed it to KSampler). No text encoder produces one, so a refiner has seen it only if it was
    trained against it."""
    return t is not None and t.numel() > 0 and not bool(torch.count_nonzero(t))


def pad_tokens(t: torch.Tensor, length: int, pad_token: torch.Tensor) -> torch.Tensor:
    """Extend (B,T,D) to `length` tokens with `pad_token` (D,), for encoders that emit no padding (T5)."""
    missing = length - t.shape[1]
    if missing <= 0:
        return t
    pad = pad_token.to(device=t.device, dtype=t.dtype).reshape(1, 1, -1).expand(t.shape[0], missing, -1)
    return torch.cat([t, pad], dim=1)


def refine(
    refiner: Refiner,
    c: torch.Tensor,
    uc: torch.Tensor,
    alpha: float = 1.0,
    keep_rule: str = KEEP_CLIP_CHUNK_START,
    family: str = "unknown",
    guidance: float | torch.Tensor | None = None,
    stage: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Return c + alpha * R(c, uc) with kept positions restored; dtype and device follow c.

    guidance: the scale w a dial refiner is asked for, one number or one per prompt (default: its reference);
    a single-scale refiner ignores it. stage: a timestep-aware refiner's stage, one or one per prompt (default
    0). Differentiable with respect to the refiner's parameters, so training uses this same function.
    """
    check_embeddings(c, uc, refiner.embed_dim, family)
    param = next(refiner.parameters())
    if torch.is_tensor(guidance):
        guidance = guidance.to(device=param.device, dtype=param.dtype)
    delta = refiner(c.to(device=param.device, dtype=param.dtype), uc.to(device=param.device, dtype=param.dtype), guidance,
                    stage)
    delta = delta.to(device=c.device, dtype=c.dtype)
    mask = keep_mask(c.shape[1], keep_rule, device=c.device)[None, :]
    if keep_rule == KEEP_ZERO_ROWS:  # decided per prompt, by value: (B, T)
        mask = mask | (c == 0).all(dim=-1)
    delta = delta.masked_fill(mask[..., None], 0.0)
    return c + alpha * delta
