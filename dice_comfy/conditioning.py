"""DICE Refine Conditioning's work: CONDITIONING in, refined CONDITIONING out, ComfyUI's objects left as they are."""

from __future__ import annotations

import logging

from dice_core.families import check_same_family, family_info
from dice_core.fileformat import RefinerBundle
from dice_core.refiner import is_zeroed_out

from .bridge import encode_prompt, family_of

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


def check_refiner_fits(refiner: RefinerBundle, model) -> None:
    """With the MODEL connected: its family must be one DICE applies to, and the one the refiner was
    trained for. Without it, only the embedding width can be checked (in dice_core.refiner)."""
    if model is None:
        return
    family = family_of(model)
    family_info(family)  # the sentence for a guidance-distilled or unknown family
    check_same_family(refiner.family, family)


def refine_conditioning(refiner: RefinerBundle, positive, negative=None, strength: float = 1.0, model=None) -> list:
    """A new CONDITIONING list: each entry is the input entry with its tensor refined. The dict is a shallow
    copy with exactly the same keys and values (nothing added, so no hooks reach the sampler)."""
    check_refiner_fits(refiner, model)
    if not positive:
        raise ValueError("the positive CONDITIONING is empty: connect a text encoder output")
    uc = uc_from_negative(negative)
    if is_zeroed_out(uc) and not is_zeroed_out(refiner.null_uc):
        log.warning(ZERO_NEGATIVE_WARNING)
    out = []
    for tensor, extras in positive:
        out.append([refiner.refine(tensor, uc, strength), extras.copy()])
    return out


def training_prompt_entries(clip, texts: list[str], conditioning=None) -> list[list]:
    """One CONDITIONING entry per training prompt: the connected conditioning's entries, then each text encoded."""
    entries = [list(e) for e in conditioning] if conditioning else []
    entries += [encode_prompt(clip, t)[0] for t in texts]
    if not entries:
        raise ValueError("no training prompts: type some in 'prompts' (one per line), pick a prompts file, "
                         "or connect 'conditioning'")
    return entries


def training_uc_entry(clip, negative=None) -> list:
    """The uc CFG is distilled against: the connected negative's first entry, else the empty prompt."""
    if negative:
        return list(negative[0])
    if clip is None:
        raise ValueError("connect 'clip' (to encode the empty prompt) or a 'negative' conditioning to use as uc")
    return encode_prompt(clip, "")[0]
