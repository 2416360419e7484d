"""Refiner files: one .safetensors holding weights, the null embedding, optional optimizer state,
and metadata describing what the refiner was trained for. Never pickle."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .refiner import KEEP_CLIP_CHUNK_START, KEEP_RULES, Refiner, check_stage_edges, pad_tokens, refine, stage_ranges

FORMAT_NAME = "dice-refiner"
# 2: timestep-aware refiners (later_stages.*); a single-stage file is still written as 1, so the packs before
# stages read it, while a staged file tells them to update rather than silently refine with its first stage only.
FORMAT_VERSION = 2
SINGLE_STAGE_FORMAT_VERSION = 1
NULL_KEY = "dice.null_uc"
PAD_KEY = "dice.pad_token"
OPTIM_PREFIX = "optim."
WEIGHT_KEYS = (
    "fc1.weight",
    "fc1.bias",
    "attention.to_q.weight",
    "attention.to_k.weight",
    "attention.to_v.weight",
    "attention.to_out.0.weight",
    "attention.to_out.0.bias",
    "fc2.weight",
    "fc2.bias",
)
# A dial refiner's extra weights (dice_core.refiner.GuidanceFilm); a file has all of them or none.
GUIDANCE_KEYS = ("guidance.net.0.weight", "guidance.net.0.bias", "guidance.net.2.weight", "guidance.net.2.bias")
STAGE_PREFIX = "later_stages."  # a timestep-aware refiner's stages after the first: later_stages.<i>.<weight key>


class RefinerFileError(ValueError):
    """A refiner file that cannot be used, with the reason in words."""


@dataclass
class RefinerBundle:
    """Everything a refiner file carries; this is the DICE_REFINER value passed between nodes."""

    module: Refiner
    family: str = "unknown"
    keep_rule: str = "clip_chunk_start"
    pad_to: int | None = None
    null_uc: torch.Tensor | None = None  # (1, T, D) embedding of the empty prompt
    pad_token: torch.Tensor | None = None  # (D,) appended when an encoder emits no padding
    recipe: dict[str, Any] = field(default_factory=dict)
    base_model_hash: str | None = None
    train_step: int = 0
    loss_history: list[float] = field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None

    @property
    def embed_dim(self) -> int:
        return self.module.embed_dim

    @property
    def trained_guidance(self) -> float | None:
        """The scale w it was trained for (a dial refiner: its default); None for imported weights."""
        w = self.recipe.get("guidance_scale")
        return float(w) if w is not None else None

    @property
    def guidance_range(self) -> tuple[float, float] | None:
        """A dial refiner's trained range of w, else None."""
        r = self.recipe.get("guidance_range") if self.module.guidance is not None else None
        return (float(r[0]), float(r[1])) if r else None

    @property
    def stage_ranges(self) -> list[tuple[float, float]]:
        """(start_percent, end_percent) of each timestep stage; [(0, 1)] for the paper's single refiner."""
        return stage_ranges(self.module.stage_edges)

    def describe(self) -> str:
        dial = f", dial w {self.guidance_range[0]:g}-{self.guidance_range[1]:g}" if self.guidance_range else ""
        stages = f", {self.module.stage_count} timestep stages" if self.module.stage_count > 1 else ""
        return (
            f"DICE refiner for {self.family} (dim {self.embed_dim}, inner {self.module.inner_dim}, "
            f"{self.module.heads} heads, {self.train_step} steps{dial}{stages})"
        )

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        if self.pad_to is None or self.pad_token is None:
            return t
        return pad_tokens(t, self.pad_to, self.pad_token)

    def refine(self, c: torch.Tensor, uc: torch.Tensor | None = None, alpha: float = 1.0,
               guidance: float | None = None, stage: int = 0) -> torch.Tensor:
        """c' for inference: pads T5-style embeddings, falls back to the stored null embedding. guidance: the
        scale w for a dial refiner (default: the one it was trained for); a single-scale refiner ignores it.
        stage: which timestep stage of a timestep-aware refiner (stage_ranges says where each applies).

        alpha 0 returns c itself: c + 0 * R(c, uc) is c, and padding it first would change the token
        count the model attends over (PixArt's 120 T5 tokens), so the prompt would not be unchanged.
        """
        if alpha == 0:
            return c
        if uc is None:
            if self.null_uc is None:
                raise ValueError(
                    "this refiner file has no stored null embedding (it was imported from weights only); "
                    "connect a negative CONDITIONING to use as uc"
                )
            uc = self.null_uc
        with torch.no_grad():
            return refine(self.module, self.pad(c), self.pad(uc), alpha, self.keep_rule, self.family, guidance, stage)


def _tensor_dict(bundle: RefinerBundle, include_optimizer: bool) -> dict[str, torch.Tensor]:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in bundle.module.state_dict().items()}
    if bundle.null_uc is not None:
        tensors[NULL_KEY] = bundle.null_uc.detach().to("cpu", torch.float32).contiguous()
    if bundle.pad_token is not None:
        tensors[PAD_KEY] = bundle.pad_token.detach().to("cpu", torch.float32).reshape(-1).contiguous()
    if include_optimizer and bundle.optimizer_state:
        for name, value in bundle.optimizer_state.get("tensors", {}).items():
            tensors[OPTIM_PREFIX + name] = value.detach().to("cpu").contiguous()
    return tensors


def save_refiner(path: str, bundle: RefinerBundle, include_optimizer: bool = True) -> str:
    """Write atomically: a temp file in the same folder, fsync, then rename over the target."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION if bundle.module.stage_count > 1 else SINGLE_STAGE_FORMAT_VERSION),
        "embed_dim": str(bundle.embed_dim),
        "inner_dim": str(bundle.module.inner_dim),
        "heads": str(bundle.module.heads),
        "guidance_reference": "" if bundle.module.guidance_reference is None else repr(bundle.module.guidance_reference),
        "timestep_stages": json.dumps(list(bundle.module.stage_edges)),
        "family": bundle.family,
        "keep_rule": bundle.keep_rule,
        "pad_to": "" if bundle.pad_to is None else str(bundle.pad_to),
        "recipe": json.dumps(bundle.recipe, sort_keys=True),
        "base_model_hash": bundle.base_model_hash or "",
        "train_step": str(bundle.train_step),
        "loss_history": json.dumps([round(float(x), 6) for x in bundle.loss_history]),
    }
    if include_optimizer and bundle.optimizer_state:
        meta["optimizer"] = json.dumps(bundle.optimizer_state.get("meta", {}))
    return atomic_save_safetensors(_tensor_dict(bundle, include_optimizer), path, meta)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> str:
    """Write a safetensors file so that `path` is either the old file or the whole new one, never a partial
    write: a temporary file in the same folder, flushed to disk, then renamed over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".dice-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file owner-only (0600); a plain open() would give 0666 less the umask, which is what
        # ComfyUI's own saves get, and what a second user or a container reading models/ expects.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def _int(meta: dict[str, str], key: str, path: str) -> int:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        raise RefinerFileError(f"{path}: metadata field {key!r} is missing or not an integer") from None


def _json(meta: dict[str, str], key: str, default: Any) -> Any:
    raw = meta.get(key)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return default


def _stage_edges(meta: dict[str, str], tensors: dict[str, torch.Tensor], path: str) -> tuple[float, ...]:
    """A timestep-aware refiner's stage edges from the metadata, checked against the stages' weights."""
    raw = meta.get("timestep_stages") or "[]"
    try:
        edges = check_stage_edges(json.loads(raw))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise RefinerFileError(f"{path}: metadata 'timestep_stages' is not a list of stage edges ({e})") from None
    stored = {int(k[len(STAGE_PREFIX):].split(".")[0]) for k in tensors
              if k.startswith(STAGE_PREFIX) and k[len(STAGE_PREFIX):].split(".")[0].isdigit()}
    if stored != set(range(len(edges))):
        raise RefinerFileError(f"{path}: metadata names {len(edges) + 1} timestep stages but the file holds weights for "
                               f"{len(stored) + 1}; the file is inconsistent")
    return edges


def load_refiner(path: str, device: str | torch.device = "cpu") -> RefinerBundle:
    """Load and validate; every failure is a RefinerFileError that says what is wrong."""
    if not os.path.isfile(path):
        raise RefinerFileError(f"refiner file not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RefinerFileError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from None

    missing = [k for k in WEIGHT_KEYS if k not in tensors]
    if meta.get("format") != FORMAT_NAME:
        if missing:
            raise RefinerFileError(
                f"{path} is a safetensors file but not a DICE refiner (no 'format: {FORMAT_NAME}' metadata and "
                f"missing refiner weights such as {missing[0]!r}). Is it a checkpoint or LoRA in the wrong folder?"
            )
        # Bare weights with the paper's parameter names: accept, dims from the shapes.
        meta = {}
    version = _int(meta, "format_version", path) if meta else FORMAT_VERSION
    if version > FORMAT_VERSION:
        raise RefinerFileError(f"{path} uses refiner format {version}; this pack reads up to {FORMAT_VERSION}: update it")
    if missing:
        raise RefinerFileError(f"{path} is missing refiner weights: {', '.join(missing)}")

    inner_dim, embed_dim = tensors["fc1.weight"].shape
    heads = _int(meta, "heads", path) if meta else 8
    if meta:
        declared = (_int(meta, "embed_dim", path), _int(meta, "inner_dim", path))
        if declared != (embed_dim, inner_dim):
            raise RefinerFileError(
                f"{path}: metadata says dim {declared[0]}/inner {declared[1]} but weights are {embed_dim}/{inner_dim}"
            )
    if heads <= 0 or inner_dim % heads:
        raise RefinerFileError(f"{path}: inner dim {inner_dim} is not divisible by {heads} heads")

    dial_keys = [k for k in GUIDANCE_KEYS if k in tensors]
    if dial_keys and len(dial_keys) != len(GUIDANCE_KEYS):
        raise RefinerFileError(f"{path} has some of a dial refiner's weights but not {sorted(set(GUIDANCE_KEYS) - set(dial_keys))}")
    reference = None
    if dial_keys:
        try:
            reference = float(meta.get("guidance_reference", ""))
        except ValueError:
            raise RefinerFileError(f"{path} has dial weights but no valid 'guidance_reference' metadata") from None
        if not reference > 1:
            raise RefinerFileError(f"{path}: the dial's reference guidance scale {reference:g} is not above 1")
    edges = _stage_edges(meta, tensors, path)
    module = Refiner(embed_dim, inner_dim, heads, reference, edges)
    expected = module.state_dict()
    stage_keys = [STAGE_PREFIX + f"{i}." + k for i in range(len(edges)) for k in (*WEIGHT_KEYS, *dial_keys)]
    for k in (*WEIGHT_KEYS, *dial_keys, *stage_keys):
        if k not in tensors:
            raise RefinerFileError(f"{path} is a {len(edges) + 1}-stage refiner but has no {k!r}: the file is incomplete")
        if tensors[k].shape != expected[k].shape:
            raise RefinerFileError(f"{path}: {k} has shape {tuple(tensors[k].shape)}, expected {tuple(expected[k].shape)}")
        if not torch.isfinite(tensors[k]).all():
            raise RefinerFileError(f"{path}: {k} contains NaN or inf; the file was saved from a diverged run")
    module.load_state_dict({k: tensors[k].float() for k in (*WEIGHT_KEYS, *dial_keys, *stage_keys)})
    module.to(device).eval().requires_grad_(False)

    family = meta.get("family", "unknown")
    # Every file this pack writes records its rule; files from before it did were all CLIP families.
    keep_rule = meta.get("keep_rule") or KEEP_CLIP_CHUNK_START
    if keep_rule not in KEEP_RULES:
        raise RefinerFileError(f"{path}: unknown kept-token rule {keep_rule!r}")
    null_uc = tensors.get(NULL_KEY)
    if null_uc is not None and (null_uc.ndim != 3 or null_uc.shape[-1] != embed_dim):
        raise RefinerFileError(f"{path}: stored null embedding has shape {tuple(null_uc.shape)}, expected (1, T, {embed_dim})")
    pad_token = tensors.get(PAD_KEY)
    if pad_token is not None and pad_token.numel() != embed_dim:
        raise RefinerFileError(f"{path}: stored pad token has {pad_token.numel()} values, expected {embed_dim}")

    optim_tensors = {k[len(OPTIM_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)}
    optimizer_state = None
    if optim_tensors:
        optimizer_state = {"tensors": optim_tensors, "meta": _json(meta, "optimizer", {})}

    return RefinerBundle(
        module=module,
        family=family,
        keep_rule=keep_rule,
        pad_to=int(meta["pad_to"]) if meta.get("pad_to") else None,
        null_uc=null_uc,
        pad_token=pad_token,
        recipe=_json(meta, "recipe", {}),
        base_model_hash=meta.get("base_model_hash") or None,
        train_step=int(meta.get("train_step") or 0),
        loss_history=[float(x) for x in _json(meta, "loss_history", [])],
        optimizer_state=optimizer_state,
    )
