"""Glue between ComfyUI objects (MODEL, CLIP, CONDITIONING) and dice_core.

Everything that touches `comfy` lives here, so dice_core stays pure torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

import torch

from dice_core.families import FamilyInfo, family_info
from dice_core.refiner import append_dims, pad_tokens

from . import internals

log = logging.getLogger("ComfyUI-DICE")


def family_of(model_patcher) -> str:
    """The name of ComfyUI's model config class: the family. A config class from outside ComfyUI (a custom node's
    or the toy world's variant, e.g. an SD1.5 config with v-prediction) is the family of the nearest ComfyUI class
    it extends, since it runs the same architecture and text encoder. ComfyUI's own subclasses keep their own
    names: WAN21_I2V extends WAN21_T2V, but is a different task."""
    for cls in type(model_patcher.model.model_config).__mro__:
        if cls.__module__.split(".")[0] == "comfy":
            return cls.__name__
    return type(model_patcher.model.model_config).__name__


PATCHES_MARK = ";patches:"


def model_fingerprint(model_patcher) -> str:
    """A cheap provenance hash of the model a refiner is trained for or used with.

    The checkpoint's part: parameter names, shapes and a sample of values from a few tensors, read as the checkpoint
    holds them even while a LoRA is applied in place ("sha256-sample:<hex>"; unchanged since refiner files first
    stored it, so older files compare equal). A MODEL with weight patches (LoRAs, merges) gets PATCHES_MARK and a
    hash of the patches after it: their keys, strengths and a sample of their tensors. A LoRA is a patch applied at
    load time, not a change to the checkpoint, so without that part a refiner trained before a LoRA was added
    could not be told from one trained with it, and measured, that matters (BENCHMARKS.md, "A refiner under a
    LoRA")."""
    h = hashlib.sha256()
    sd = model_patcher.model.diffusion_model.state_dict()
    keys = sorted(sd)
    for k in keys:
        h.update(f"{k}:{tuple(sd[k].shape)};".encode())
    for k in keys[:: max(1, len(keys) // 8)]:
        weight = internals.checkpoint_weight(model_patcher, k, sd[k])
        h.update(weight.detach().flatten()[:4096].to("cpu", torch.float32).numpy().tobytes())
    fingerprint = "sha256-sample:" + h.hexdigest()[:32]
    patches = internals.weight_patches(model_patcher)
    if not patches:
        return fingerprint
    p = hashlib.sha256()
    for key in sorted(patches):
        p.update(f"{key}:".encode())
        _digest_patch_value(p, patches[key])
    return fingerprint + PATCHES_MARK + p.hexdigest()[:16]


def _digest_patch_value(h, value) -> None:
    """Feed a patch (a tuple of strengths, tensors and weight adapters, nested) into the hash: numbers and strings by
    value, tensors by shape and their first 1024 values, an adapter by its class and its tensors, anything else
    (a function) by its type only."""
    if torch.is_tensor(value):
        h.update(f"{tuple(value.shape)}".encode())
        h.update(value.detach().flatten()[:1024].to("cpu", torch.float32).numpy().tobytes())
    elif isinstance(value, (list, tuple)):
        for item in value:
            _digest_patch_value(h, item)
    elif value is None or isinstance(value, (bool, int, float, str)):
        h.update(repr(value).encode())
    elif hasattr(value, "weights"):
        h.update(type(value).__name__.encode())
        _digest_patch_value(h, value.weights)
    else:
        h.update(type(value).__name__.encode())


def encode_prompt(clip, text: str) -> list:
    """What ComfyUI's CLIPTextEncode does, so the refiner sees exactly the user's conditioning."""
    if clip is None:
        raise RuntimeError("a CLIP (text encoder) input is required to encode prompts")
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def conditioning_batch(entries: list[list]) -> tuple[torch.Tensor, dict]:
    """Stack single-prompt CONDITIONING entries into one batched entry (B,T,D) plus batched extras.

    Every tensor extra (pooled_output, attention_mask, HiDream's conditioning_llama3, HunyuanDiT's
    conditioning_mt5xl, ...) is per prompt, batch first, so it is stacked the same way; other values
    (numbers, strings) must agree across the entries, as they describe the batch as a whole."""
    tensors = [e[0] for e in entries]
    lengths = {t.shape[1] for t in tensors}
    if len(lengths) > 1:
        raise ValueError(f"cannot batch prompts of different token lengths {sorted(lengths)}")
    extras = dict(entries[0][1])
    for key, first in entries[0][1].items():
        values = [e[1].get(key) for e in entries]
        if torch.is_tensor(first):
            if any(not torch.is_tensor(v) or v.shape[1:] != first.shape[1:] for v in values):
                raise ValueError(f"cannot batch prompts whose {key!r} tensors differ in shape")
            extras[key] = torch.cat(values)
    return torch.cat(tensors), extras


def batch_signature(entry: list) -> tuple:
    """Entries with equal signatures stack into one model call: same token count and same extra shapes."""
    tensor, extras = entry
    shapes = tuple(sorted((k, tuple(v.shape[1:])) for k, v in extras.items() if torch.is_tensor(v)))
    return (tensor.shape[1], shapes)


def expand_entry(entry: list, n: int) -> tuple[torch.Tensor, dict]:
    """One CONDITIONING entry (batch 1) repeated for n rows, its tensor extras with it."""
    tensor, extras = entry
    extras = {k: (v.expand(n, *v.shape[1:]) if torch.is_tensor(v) and v.shape[0] == 1 else v) for k, v in extras.items()}
    return tensor.expand(n, *tensor.shape[1:]), extras


@contextlib.contextmanager
def own_copies_of_saved_activations(enabled: bool):
    """Autograd keeps its own copy of each saved activation that depends on the prompt, so a model that
    then adds a residual into that tensor in place (Flux-style blocks: Chroma, LTXV, HunyuanVideo 1.5)
    can still be backpropagated through. Frozen weights and other tensors without grad are kept by
    reference, as usual; only the prompt-dependent activations cost a copy."""
    if not enabled:
        yield
        return
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone() if t.requires_grad else t, lambda t: t):
        yield


def rows_by_signature(signatures: list, idx: torch.Tensor) -> list[torch.Tensor]:
    """The positions in idx grouped by their prompt's signature, each group in order."""
    groups: dict = {}
    for row, i in enumerate(idx.tolist()):
        groups.setdefault(signatures[i], []).append(row)
    return [torch.tensor(rows) for rows in groups.values()]


class ComfyDenoiser:
    """dice_core's Denoiser on a ComfyUI ModelPatcher, through calc_cond_batch so every family's
    extra conditioning (SDXL pooled and size inputs, PixArt resolution) is applied by ComfyUI."""

    def __init__(self, model_patcher, prompts: list[list], uc_entry: list, device, pad_to: int | None, pad_token,
                 autocast_dtype: torch.dtype | None = None):
        """uc_entry: the one CONDITIONING entry every prompt is guided against, or a list of entries, one per
        prompt (negative-aware training: the rows are (prompt, negative) pairs and share a few negatives)."""
        self.patcher = model_patcher
        self.model = model_patcher.model
        self.ms = self.model.model_sampling
        self.device = device
        self.model_options = model_patcher.model_options
        self.prompts = prompts  # one [tensor (1,T,D), dict] per prompt, as the text encoder made it
        self.uc_entries = [uc_entry] * len(prompts) if torch.is_tensor(uc_entry[0]) else list(uc_entry)
        if len(self.uc_entries) != len(prompts):
            raise ValueError(f"{len(self.uc_entries)} negatives for {len(prompts)} prompts: give one, or one per prompt")
        self.pad_to = pad_to
        self.pad_token = pad_token
        self.inplace_residuals = family_for(model_patcher).inplace_residuals
        self.one_negative = len({id(u) for u in self.uc_entries}) <= 1
        # Rows share a teacher call when their prompts stack and so do their negatives.
        self.teacher_signatures = [(batch_signature(p), batch_signature(u)) for p, u in zip(prompts, self.uc_entries)]
        self.signatures = [batch_signature(p) for p in prompts]
        # What the student sees of each prompt: its own tokens, or the family's fixed padded length.
        self.student_lengths = torch.tensor([max(pad_to or 0, p[0].shape[1]) for p in prompts])
        self.student_signatures = [(int(n), s[1]) for n, s in zip(self.student_lengths, self.signatures)]
        self.dtype = self.model.get_dtype()
        compute = self.model.manual_cast_dtype or self.dtype
        # Autocast only where ComfyUI loaded the model in float32; a model already in fp16/bf16 keeps
        # the precision ComfyUI chose for it. Teacher and student share it, so their numerics agree.
        on_gpu = torch.device(device).type == "cuda"
        self.autocast_dtype = autocast_dtype if on_gpu and compute == torch.float32 else None
        effective = self.autocast_dtype or compute
        self.needs_grad_scaling = on_gpu and effective == torch.float16

    def _precision(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    # ---- schedule -------------------------------------------------------------------------
    def sigma_schedule(self, steps: int) -> torch.Tensor:
        return internals.sigma_schedule(self.patcher, steps).float().cpu()

    def random_sigmas(self, n: int, generator: torch.Generator) -> torch.Tensor:
        sig = getattr(self.ms, "sigmas", None)
        if sig is not None and sig.ndim == 1 and len(sig) > 1:
            t = torch.randint(0, len(sig), (n,), generator=generator)
            return sig.detach().float().cpu()[t]
        u = torch.rand(n, generator=generator)
        return torch.tensor([float(self.ms.percent_to_sigma(float(p))) for p in u])

    def sigma_at_percent(self, percent: float) -> float:
        return float(self.ms.percent_to_sigma(float(percent)))

    def noise_latent(self, x0, noise, sigma):
        return self.ms.noise_scaling(append_dims(sigma, x0.ndim).to(x0), noise, x0)

    # ---- model calls ----------------------------------------------------------------------
    def _encode(self, tensor: torch.Tensor, extras: dict, x: torch.Tensor, prompt_type: str) -> list[dict]:
        return internals.encode_conds(self.patcher, tensor, extras, x, prompt_type)

    @torch.no_grad()
    def teacher(self, x: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor):
        """cond and uncond in one batched call, per group of prompts that can share a call (equal token
        counts and extra shapes: T5 and LLM encoders give each prompt its own length)."""
        x, sigma = x.to(self.device), sigma.to(self.device)
        x0_c = torch.empty_like(x)
        x0_uc = torch.empty_like(x)
        for rows in rows_by_signature(self.teacher_signatures, idx):
            c, extras = conditioning_batch([self.prompts[int(i)] for i in idx[rows]])
            if self.one_negative:  # one uc for every row: a broadcast view, not a copy per row
                uc, uc_extras = expand_entry(self.uc_entries[0], len(rows))
            else:
                uc, uc_extras = conditioning_batch([self.uc_entries[int(i)] for i in idx[rows]])
            xr = x[rows]
            with self._precision():
                out_c, out_uc = internals.denoise(
                    self.patcher,
                    [self._encode(c.to(self.device), extras, xr, "positive"),
                     self._encode(uc.to(self.device), uc_extras, xr, "negative")],
                    xr,
                    sigma[rows],
                    self.model_options,
                )
            x0_c[rows], x0_uc[rows] = out_c, out_uc
        return x0_c, x0_uc

    def student(self, x: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor, c_refined: torch.Tensor):
        """The model at cfg 1 on the refined prompts. c_refined is the bank's layout: prompts of one
        length (CLIP, padded T5) in one call, or, where each prompt keeps its own length, each group
        of equal length cut back to that length and run as one call."""
        outputs, order = [], []
        for rows in rows_by_signature(self.student_signatures, idx):
            entries = [[self.prompts[int(i)][0][:, :1], self.prompts[int(i)][1]] for i in idx[rows]]
            _, extras = conditioning_batch(entries)
            length = int(self.student_lengths[int(idx[rows[0]])])
            conds = self._encode(c_refined[rows.to(c_refined.device), :length], extras, x[rows], "positive")
            with self._precision(), own_copies_of_saved_activations(self.inplace_residuals):
                outputs.append(internals.denoise(self.patcher, [conds], x[rows], sigma[rows], self.model_options)[0])
            order.append(rows)
        if len(outputs) == 1:
            return outputs[0]
        inverse = torch.cat(order).argsort().to(outputs[0].device)
        return torch.cat(outputs)[inverse]

    def student_bank(self) -> torch.Tensor:
        """The prompts as the student sees them, stacked (N, T, D).

        Padded families (PixArt) are padded to their fixed length with the pad token. Where each
        prompt keeps its own length, shorter prompts are zero-filled up to the longest; the refiner
        rewrites each token from that token and uc alone (no attention between prompt tokens), so
        the fill never reaches a real token, and student() cuts it off before the model sees it."""
        tensors = [p[0] for p in self.prompts]
        if self.pad_to is not None:
            target = max(self.pad_to, max(t.shape[1] for t in tensors))
            tensors = [pad_tokens(t, target, self.pad_token) for t in tensors]
        longest = max(t.shape[1] for t in tensors)
        return torch.cat([torch.nn.functional.pad(t, (0, 0, 0, longest - t.shape[1])) for t in tensors])


@contextlib.contextmanager
def trainable_view(model_patcher, gradient_checkpointing: bool = False):
    """Make the frozen model usable for backprop without changing what other nodes see.

    model_patcher must be what internals.trainable_patcher returned (on ComfyUI 0.33 with
    dynamic VRAM, a separate non-dynamic copy). It is fully loaded, as TrainLoraNode loads what it
    trains, and comfy.model_management.in_training is set while training runs.

    Nodes run under torch.inference_mode, so loaded weights are inference tensors that autograd
    refuses to save. Swap each such tensor for a normal copy for the duration of training and put
    the very same original objects back afterwards; requires_grad flags are restored too.
    """
    internals.load_fully(model_patcher)
    model = model_patcher.model
    swapped = []
    flags = []
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, t in list(store.items()):
                if t is None:
                    continue
                if t.is_inference():
                    copy = t.detach().clone()
                    store[name] = torch.nn.Parameter(copy, requires_grad=False) if isinstance(t, torch.nn.Parameter) else copy
                    swapped.append((store, name, t))
                elif isinstance(t, torch.nn.Parameter):
                    flags.append((t, t.requires_grad))
    for p, _ in flags:
        p.requires_grad_(False)
    for store, name, _ in swapped:
        if isinstance(store[name], torch.nn.Parameter):
            store[name].requires_grad_(False)
    patched = internals.checkpoint_gradients(model.diffusion_model) if gradient_checkpointing else []
    model_patcher.pre_run()
    try:
        with internals.training_mode():
            yield model
    finally:
        model_patcher.cleanup()
        if patched:
            internals.uncheckpoint_gradients(model)
        for store, name, original in swapped:
            store[name] = original
        for p, flag in flags:
            p.requires_grad_(flag)
        if swapped:
            log.info("DICE: restored %d original model tensors after training", len(swapped))


def family_for(model_patcher) -> FamilyInfo:
    """The model's family entry; raises UnsupportedFamilyError with a sentence for a family DICE cannot train."""
    return family_info(family_of(model_patcher))
