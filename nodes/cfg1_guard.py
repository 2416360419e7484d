"""Warns when DICE-refined conditioning is sampled without ComfyUI's cfg=1 fast path.

DICE's speed-up comes from comfy/samplers.py skipping the unconditional pass at cfg 1.0. Anything
that sets model_options["disable_cfg1_optimization"] (Self-Attention Guidance, a post-CFG function
registered with disable_cfg1_optimization=True, ...) brings that pass back: the images are the
same, but every step costs two model calls again.

How the check runs, without patching ComfyUI: DICE Refine Conditioning marks each entry it makes
(`dice_refined: True`, ignored by every model's extra_conds) and attaches `GUARD_HOOK`, a
TransformerOptions hook, under the standard "hooks" key. When a guider samples, ComfyUI's
sampler_helpers.prepare_model_patcher hands every TransformerOptions hook on the conds that
sampling run's model_options. The guard adds a one-shot OUTER_SAMPLE wrapper there (a copy owned
by that run, so nothing accumulates on the ModelPatcher) and does not register itself, so
filter_registered_hooks_on_conds strips it from the conds before any model call: batching,
caching and results are unchanged. The wrapper sees the guider, so it knows cfg and the final
model_options.
"""

from __future__ import annotations

import logging
import math

import comfy.hooks
import comfy.patcher_extension

log = logging.getLogger("ComfyUI-DICE")

MARK = "dice_refined"
WRAPPER_KEY = "dice_cfg1_guard"

CFG1_DISABLED_WARNING = (
    "DICE: this KSampler runs refined conditioning at cfg 1.0, but the model has ComfyUI's cfg=1 optimization "
    "disabled (model_options['disable_cfg1_optimization'] is set, e.g. by Self-Attention Guidance or a custom "
    "CFG/post-CFG function). ComfyUI will still compute the unconditional pass every step, which cancels "
    "DICE's speed-up (about 2x). Refined conditioning still works; bypass the node that sets it to get the "
    "speed-up back."
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
    """Every warning for one sampling run of refined conditioning by this guider (CFGGuider or similar)."""
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
        log.debug("DICE: cfg=1 guard could not inspect the guider", exc_info=True)
    return executor(*args, **kwargs)


class DiceCfg1GuardHook(comfy.hooks.TransformerOptionsHook):
    """Rides on refined conditioning; see the module docstring. Never registers, so ComfyUI drops it from the conds."""

    def __init__(self, *args, **kwargs):
        super().__init__(transformers_dict={})
        self.hook_id = WRAPPER_KEY

    def add_hook_patches(self, model, model_options: dict, target_dict: dict, registered) -> bool:
        wrappers = (model_options.setdefault("transformer_options", {}).setdefault("wrappers", {})
                    .setdefault(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, {}).setdefault(WRAPPER_KEY, []))
        if _outer_sample_wrapper not in wrappers:
            wrappers.append(_outer_sample_wrapper)
        return False  # not registered: filter_registered_hooks_on_conds removes it before any model call

    def on_apply_hooks(self, model, transformer_options: dict) -> None:
        return None


GUARD_HOOK = DiceCfg1GuardHook()  # one shared instance, so HookGroups dedupe it


def mark_refined(extras: dict) -> dict:
    """A copy of a CONDITIONING entry's dict, marked as DICE-refined and carrying the guard hook
    (combined with any hooks already there, e.g. from Cond Set Props)."""
    out = dict(extras)
    out[MARK] = True
    guard = comfy.hooks.HookGroup()
    guard.add(GUARD_HOOK)
    existing = out.get("hooks")
    out["hooks"] = guard if existing is None else comfy.hooks.HookGroup.combine_all_hooks([existing, guard])
    return out


def strip_guard(extras: dict) -> dict:
    """A copy without the guard, for code that calls the model directly instead of through a guider."""
    out = dict(extras)
    out.pop(MARK, None)
    hooks = out.get("hooks")
    if hooks is not None and GUARD_HOOK in hooks.hooks:
        rest = [h for h in hooks.hooks if h != GUARD_HOOK]
        if rest:
            group = comfy.hooks.HookGroup()
            for h in rest:
                group.add(h)
            out["hooks"] = group
        else:
            out.pop("hooks")
    return out


def is_refined(extras: dict) -> bool:
    return bool(extras.get(MARK, False))
