"""DICE Refine Conditioning's work: CONDITIONING in, refined CONDITIONING out, ComfyUI's objects left as they are."""

from __future__ import annotations

import logging

import torch

from dice_core.families import check_same_family, family_info
from dice_core.fileformat import RefinerBundle
from dice_core.refiner import StrengthSchedule, is_zeroed_out

from .bridge import PATCHES_MARK, encode_prompt, family_of, model_fingerprint

log = logging.getLogger("ComfyUI-DICE")


def uc_from_negative(negative) -> object | None:
    if negative is None:
        return None
    if len(negative) == 0:
        raise ValueError("the negative CONDITIONING is empty; disconnect it to use the refiner's stored null prompt")
    if len(negative) > 1:
        log.warning("DICE: negative CONDITIONING has %d entries; the first is used as uc", len(negative))
    return negative[0][0]


ZERO_NEGATIVE_WARNING = (
    "DICE: the negative connected to DICE Refine Conditioning is all zeros (ConditioningZeroOut), but this refiner "
    "was trained against a text prompt's embedding and has never seen a zero uc, so its guidance is untested there. "
    "Disconnect the negative to use the uc the refiner was trained with, or connect a text negative; to use zeroed "
    "negatives, train the refiner with the same ConditioningZeroOut connected to DICE Train Refiner's negative."
)


UNTRAINED_NEGATIVE_WARNING = (
    "DICE: a negative is connected, but this refiner was trained against the empty prompt only (the paper's way), and "
    "measured in the toy world such a refiner all but ignores the negative (BENCHMARKS.md, 'Negative prompts'). To make "
    "negatives act as they do in CFG, retrain with your negatives in DICE Train Refiner's negative_prompts."
)


def _same(a, b) -> bool:
    return b is not None and a.shape == b.shape and bool(torch.equal(a.to(b), b))


def check_refiner_fits(refiner: RefinerBundle, model) -> None:
    """With the MODEL connected: its family must be one DICE applies to, and the one the refiner was
    trained for; a different checkpoint or LoRA stack gets a warning. Without it, only the embedding width can be
    checked (in dice_core.refiner)."""
    if model is None:
        return
    family = family_of(model)
    family_info(family)  # the sentence for a guidance-distilled or unknown family
    check_same_family(refiner.family, family)
    warn_if_other_model(refiner, model)


OTHER_LORAS_WARNING = (
    "DICE: this refiner was trained on this checkpoint with other LoRAs (or other model patches) than the MODEL "
    "connected to DICE Refine Conditioning has now, for example a LoRA added after training. Measured in the toy "
    "world (BENCHMARKS.md, 'A refiner under a LoRA'), a refiner trained without a style LoRA kept clearly less of "
    "CFG's gain on the model with it than one retrained with it. For the full effect, train the refiner on this "
    "MODEL, with its LoRAs, in DICE Train Refiner."
)


OTHER_CHECKPOINT_WARNING = (
    "DICE: this refiner was trained on a different checkpoint (fingerprint %s) than the MODEL connected to DICE Refine "
    "Conditioning (%s). A refiner distils one model's guidance; on another model, even a fine-tune of the same "
    "family, it guides less well, and even a LoRA on the same checkpoint measured clearly worse (BENCHMARKS.md, 'A "
    "refiner under a LoRA'). Train a refiner for this checkpoint. (Loading the same file in another weight dtype, "
    "e.g. fp8, also changes the fingerprint; then this warning can be ignored.)"
)


def warn_if_other_model(refiner: RefinerBundle, model) -> None:
    """Compare the refiner's recorded base_model_hash with the connected MODEL's fingerprint. Files without one
    (official pickles) are not checked."""
    trained_on = refiner.base_model_hash
    if not trained_on:
        return
    now = model_fingerprint(model)
    if now == trained_on:
        return
    if now.split(PATCHES_MARK)[0] == trained_on.split(PATCHES_MARK)[0]:
        log.warning(OTHER_LORAS_WARNING)
    else:
        log.warning(OTHER_CHECKPOINT_WARNING, trained_on, now)


def dial(refiner: RefinerBundle, guidance_scale: float) -> tuple[float | None, float]:
    """(the scale w a dial refiner is asked for, the factor that turns a strength into the alpha to refine with) for the
    node's guidance_scale (0: the scale the refiner was trained for). A single-scale refiner can only scale its change:
    w maps to strength * (w - 1) / (w_trained - 1), which measured close to CFG below the trained w and well short
    above it."""
    if not guidance_scale or guidance_scale == refiner.trained_guidance:
        return None, 1.0
    if guidance_scale < 1:
        raise ValueError(f"guidance_scale {guidance_scale:g} is below 1; use 0 for the scale the refiner was trained for")
    if refiner.module.guidance is not None:
        low, high = refiner.guidance_range or (None, None)
        if low is not None and not low <= guidance_scale <= high:
            log.warning("DICE: guidance_scale %g is outside the range this dial refiner was trained on (%g to %g); "
                        "its guidance there is extrapolated and untested", guidance_scale, low, high)
        return guidance_scale, 1.0
    trained = refiner.trained_guidance
    if trained is None or trained <= 1:
        raise ValueError("this refiner's file does not record the guidance scale it was trained for, so guidance_scale "
                         "cannot be mapped onto it: set guidance_scale to 0 and use strength")
    log.warning(DIAL_WARNING, trained, guidance_scale, (guidance_scale - 1) / (trained - 1))
    return None, (guidance_scale - 1) / (trained - 1)


DIAL_WARNING = (
    "DICE: this refiner was trained for one guidance scale, w=%g, so guidance_scale %g only scales its change (strength "
    "x %.3g). Measured in the toy world (BENCHMARKS.md, 'Guidance dial'), that recovers most of CFG's gain below the "
    "trained w and much less above it. For a real dial, train with DICE Train Refiner's guidance_range_min/max."
)


def refine_conditioning(refiner: RefinerBundle, positive, negative=None, strength: float | StrengthSchedule = 1.0,
                        model=None, guidance_scale: float = 0.0) -> list:
    """A new CONDITIONING list: each entry is the input entry with its tensor refined. The dict is a shallow
    copy with exactly the same keys and values (nothing added, so no hooks reach the sampler). A timestep-aware
    refiner makes one such entry per stage, and a StrengthSchedule one per phase, which adds only the start_percent
    and end_percent that ComfyUI's own ConditioningSetTimestepRange sets."""
    schedule = strength if isinstance(strength, StrengthSchedule) else StrengthSchedule(strength, strength)
    check_refiner_fits(refiner, model)
    if not positive:
        raise ValueError("the positive CONDITIONING is empty: connect a text encoder output")
    uc = uc_from_negative(negative)
    if is_zeroed_out(uc) and not is_zeroed_out(refiner.null_uc):
        log.warning(ZERO_NEGATIVE_WARNING)
    if uc is not None and not is_zeroed_out(uc) and not refiner.recipe.get("negative_prompts") and not _same(uc, refiner.null_uc):
        log.warning(UNTRAINED_NEGATIVE_WARNING)
    guidance, strength_factor = dial(refiner, guidance_scale)
    out = []
    for tensor, extras in positive:
        if refiner.module.stage_count == 1 and schedule.is_constant:
            alpha = schedule.phases()[0][0] * strength_factor
            out.append([refiner.refine(tensor, uc, alpha, guidance), extras.copy()])
            continue
        for stage, phase_strength, (start, end) in entry_pieces(refiner, schedule, extras):
            out.append([refiner.refine(tensor, uc, phase_strength * strength_factor, guidance, stage),
                        {**extras, "start_percent": start, "end_percent": end}])
    return out


def entry_pieces(refiner: RefinerBundle, schedule: StrengthSchedule, extras: dict) -> list[tuple[int, float, tuple[float, float]]]:
    """(stage, strength, (start_percent, end_percent)) of the entries made of one input entry: each range where one
    timestep stage and one strength phase apply, within the range the entry already had (ConditioningSetTimestepRange's
    keys), so a prompt scheduled for part of the sampling stays scheduled there. Pieces outside it make no entry.
    Exactly one entry applies at each step, as the ranges meet end to start, so sampling stays one model pass per step."""
    own = (float(extras.get("start_percent", 0.0)), float(extras.get("end_percent", 1.0)))
    pieces = []
    for stage, (stage_start, stage_end) in enumerate(refiner.stage_ranges):
        for phase_strength, (phase_start, phase_end) in schedule.phases():
            start, end = max(stage_start, phase_start, own[0]), min(stage_end, phase_end, own[1])
            if start < end:
                pieces.append((stage, phase_strength, (start, end)))
    return pieces


def training_prompt_entries(clip, texts: list[str], conditioning=None) -> list[list]:
    """One CONDITIONING entry per training prompt: the connected conditioning's entries, then each text encoded."""
    entries = [list(e) for e in conditioning] if conditioning else []
    entries += [encode_prompt(clip, t)[0] for t in texts]
    if not entries:
        raise ValueError("no training prompts: type some in 'prompts' (one per line), pick a prompts file, "
                         "or connect 'conditioning'")
    return entries


def training_negative_entries(clip, lines: list[str]) -> list[list]:
    """The extra negatives of negative-aware training, one entry per distinct prompt line (the default uc, the
    empty prompt or the connected negative, is always trained against too)."""
    texts = list(dict.fromkeys(lines))
    if texts and clip is None:
        raise ValueError("connect 'clip' to encode the negative prompts in 'negative_prompts'")
    return [encode_prompt(clip, t)[0] for t in texts]


def training_uc_entry(clip, negative=None) -> list:
    """The uc CFG is distilled against: the connected negative's first entry, else the empty prompt."""
    if negative:
        return list(negative[0])
    if clip is None:
        raise ValueError("connect 'clip' (to encode the empty prompt) or a 'negative' conditioning to use as uc")
    return encode_prompt(clip, "")[0]
