"""The DICE Fast-Path Check node's work: warn when a sampling run would cancel DICE's speed-up.

DICE's speed-up comes from comfy/samplers.py skipping the unconditional pass at cfg 1.0. Anything
that sets model_options["disable_cfg1_optimization"] (Self-Attention Guidance, a post-CFG function
registered with disable_cfg1_optimization=True, ...) brings that pass back: the images are the same,
but every step costs two model calls again. Sampling refined conditioning above cfg 1.0 applies the
guidance twice.

The check rides on a MODEL clone, never on CONDITIONING and never on the shared model: the node
adds a keyed OUTER_SAMPLE wrapper through ModelPatcher.add_wrapper_with_key, the API core's own
EasyCache node uses. Refined CONDITIONING stays exactly the input's keys and values, so nothing
reaches comfy.sampler_helpers.cond_has_hooks (on ComfyUI 0.33, hooks on a cond swap a dynamic-VRAM
model for a non-dynamic copy). The wrapper sees the guider of each run, so it knows cfg and the
final model_options, including patches added by nodes placed after this one.
"""

from __future__ import annotations

import logging
import math

import comfy.patcher_extension

log = logging.getLogger("ComfyUI-DICE")

WRAPPER_KEY = "dice_fast_path_check"

CFG1_DISABLED_WARNING = (
    "DICE: this KSampler runs at cfg 1.0, but the model has ComfyUI's cfg=1 optimization disabled "
    "(model_options['disable_cfg1_optimization'] is set, e.g. by Self-Attention Guidance or a custom CFG/post-CFG "
    "function). ComfyUI will still compute the unconditional pass every step, which cancels DICE's speed-up "
    "(about 2x). Refined conditioning still works; bypass the node that sets it to get the speed-up back."
)
CFG_ABOVE_1_WARNING = (
    "DICE: refined conditioning is being sampled at cfg %.3g. The refiner already contains the guidance it was "
    "trained for, so cfg above 1.0 applies guidance twice (over-saturated images) and costs two model calls per "
    "step. Use cfg 1.0 with DICE Refine Conditioning."
)


def check_model_options(model_options: dict | None, cfg: float | None = 1.0) -> str | None:
    """Log and return the speed-up warning if these model_options disable the cfg=1 fast path.

    cfg: the guider's cfg; the fast path only exists at cfg 1.0, so other values never warn here.
    """
    if not model_options or not model_options.get("disable_cfg1_optimization", False):
        return None
    if cfg is not None and not math.isclose(float(cfg), 1.0):
        return None
    log.warning(CFG1_DISABLED_WARNING)
    return CFG1_DISABLED_WARNING


def check_guider(guider) -> list[str]:
    """Every warning for one sampling run by this guider (CFGGuider or similar)."""
    cfg = getattr(guider, "cfg", None)
    if not isinstance(cfg, (int, float)):  # BasicGuider and custom guiders without a single cfg: nothing to say
        return []
    found = []
    msg = check_model_options(getattr(guider, "model_options", None), cfg)
    if msg:
        found.append(msg)
    if cfg > 1.0 and not math.isclose(float(cfg), 1.0):
        log.warning(CFG_ABOVE_1_WARNING, cfg)
        found.append(CFG_ABOVE_1_WARNING % cfg)
    return found


def _outer_sample_wrapper(executor, *args, **kwargs):
    try:
        check_guider(executor.class_obj)
    except Exception:  # a diagnostic must never break sampling
        log.debug("DICE: fast-path check could not inspect the guider", exc_info=True)
    return executor(*args, **kwargs)


def with_fast_path_check(model_patcher):
    """A clone of the MODEL that checks every sampling run; the input patcher is left as it was."""
    checked = model_patcher.clone()
    checked.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
    checked.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample_wrapper)
    return checked
