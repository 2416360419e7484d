"""nodes/cfg1_guard.py: the warning when refined conditioning is sampled without ComfyUI's cfg=1 fast path,
checked on real ComfyUI sampling (tiny SD1.5 and SDXL models)."""

import importlib
import logging

import harness
import pytest
import tiny_models
import torch

STEPS = 3


@pytest.fixture()
def guard(comfy_nodes):
    refiner_nodes = harness.pack_module("nodes.refiner_nodes")
    return importlib.import_module(refiner_nodes.__package__ + ".cfg1_guard")


def _no_cfg1_fast_path(patcher):
    """What Self-Attention Guidance does: a post-CFG function registered with disable_cfg1_optimization=True."""
    p = patcher.clone()
    p.set_model_sampler_post_cfg_function(lambda args: args["denoised"], disable_cfg1_optimization=True)
    return p


def _sample(patcher, positive, cfg, negative=None, seed=3):
    import nodes

    negative = negative if negative is not None else [[torch.zeros_like(positive[0][0]), dict(positive[0][1])]]
    counter = tiny_models.CallCounter()
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    (out,) = nodes.common_ksampler(counter.attach(patcher), seed, STEPS, cfg, "euler", "normal", positive, negative, latent)
    return out["samples"], counter.batches


def _dice_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ComfyUI-DICE" and r.levelno >= logging.WARNING]


def test_check_model_options(guard, caplog):
    caplog.set_level(logging.WARNING, logger="ComfyUI-DICE")
    assert guard.check_model_options({}) is None
    assert guard.check_model_options(None) is None
    assert guard.check_model_options({"disable_cfg1_optimization": False}) is None
    assert guard.check_model_options({"disable_cfg1_optimization": True}, cfg=5.0) is None, "no fast path at cfg 5 anyway"
    assert not _dice_warnings(caplog)
    msg = guard.check_model_options({"disable_cfg1_optimization": True}, cfg=1.0)
    assert msg and "disable_cfg1_optimization" in msg and "speed-up" in msg
    assert _dice_warnings(caplog) == [msg]


def test_mark_and_strip_keep_the_other_keys(guard):
    import comfy.hooks

    pooled = torch.randn(1, 1280)
    extras = {"pooled_output": pooled, "width": 1024}
    marked = guard.mark_refined(extras)
    assert extras == {"pooled_output": pooled, "width": 1024}, "input dict must not change"
    assert marked["pooled_output"] is pooled and marked["width"] == 1024
    assert guard.is_refined(marked) and not guard.is_refined(extras)
    assert guard.GUARD_HOOK in marked["hooks"].hooks
    assert guard.strip_guard(marked) == extras
    # Hooks already on the conditioning (Cond Set Props, LoRA hooks) are kept.
    other = comfy.hooks.TransformerOptionsHook(transformers_dict={})
    group = comfy.hooks.HookGroup()
    group.add(other)
    both = guard.mark_refined({"hooks": group})
    assert other in both["hooks"].hooks and guard.GUARD_HOOK in both["hooks"].hooks
    assert guard.strip_guard(both)["hooks"].hooks == [other]
    # Marking twice keeps one guard.
    twice = guard.mark_refined(guard.mark_refined({}))
    assert twice["hooks"].hooks.count(guard.GUARD_HOOK) == 1


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_marked_conditioning_samples_identically_and_keeps_the_fast_path(guard, family, caplog):
    caplog.set_level(logging.WARNING, logger="ComfyUI-DICE")
    patcher = getattr(tiny_models, family)()
    dim, pooled = (768, None) if family == "sd15" else (2048, 1280)
    plain = tiny_models.clip_conditioning(1, dim, pooled=pooled)
    marked = [[plain[0][0], guard.mark_refined(plain[0][1])]]
    out_plain, calls_plain = _sample(patcher, plain, 1.0)
    out_marked, calls_marked = _sample(patcher, marked, 1.0)
    assert torch.equal(out_plain, out_marked), "the marker and guard hook must not change the result"
    assert calls_marked == calls_plain == [1] * STEPS, "cfg 1.0 must still skip the unconditional pass"
    assert not _dice_warnings(caplog)
    # Nothing accumulates on the model between runs.
    assert "wrappers" not in patcher.model_options.get("transformer_options", {}) or not any(
        guard.WRAPPER_KEY in d for d in patcher.model_options["transformer_options"]["wrappers"].values())
    assert not patcher.wrappers.get("outer_sample")


def test_warns_once_per_run_when_the_fast_path_is_disabled(guard, caplog):
    caplog.set_level(logging.WARNING, logger="ComfyUI-DICE")
    patcher = _no_cfg1_fast_path(tiny_models.sd15())
    plain = tiny_models.clip_conditioning(1, 768)
    marked = [[plain[0][0], guard.mark_refined(plain[0][1])]]

    _, calls = _sample(patcher, plain, 1.0)
    assert calls == [2] * STEPS, "the uncond pass is back: this is what the warning is about"
    assert not _dice_warnings(caplog), "only DICE-refined conditioning warns"

    _, calls = _sample(patcher, marked, 1.0)
    assert calls == [2] * STEPS
    assert _dice_warnings(caplog) == [guard.CFG1_DISABLED_WARNING]
    _sample(patcher, marked, 1.0, seed=4)
    assert len(_dice_warnings(caplog)) == 2, "once per sampling run, not per step"


def test_warns_when_refined_conditioning_is_sampled_above_cfg_1(guard, caplog):
    caplog.set_level(logging.WARNING, logger="ComfyUI-DICE")
    plain = tiny_models.clip_conditioning(1, 768)
    marked = [[plain[0][0], guard.mark_refined(plain[0][1])]]
    _sample(tiny_models.sd15(), marked, 5.0)
    (msg,) = _dice_warnings(caplog)
    assert "cfg 5" in msg and "twice" in msg


def test_a_failing_check_never_breaks_sampling(guard, monkeypatch):
    def boom(_guider):
        raise RuntimeError("diagnostic bug")

    monkeypatch.setattr(guard, "check_guider", boom)
    plain = tiny_models.clip_conditioning(1, 768)
    out, _ = _sample(tiny_models.sd15(), [[plain[0][0], guard.mark_refined(plain[0][1])]], 1.0)
    assert torch.isfinite(out).all()


def test_refine_node_marks_its_output(guard, comfy_nodes):
    """Needs the two lines in nodes/refiner_nodes.py that attach the guard (see nodes/cfg1_guard.py)."""
    from dice_core.fileformat import RefinerBundle
    from dice_core.refiner import Refiner

    torch.manual_seed(0)
    bundle = RefinerBundle(module=Refiner(768), family="SD15", keep_rule="clip_chunk_start", null_uc=torch.randn(1, 77, 768))
    out = comfy_nodes["DiceRefineConditioning"].execute(tiny_models.clip_conditioning(1, 768), bundle, 1.0).args[0]
    assert guard.is_refined(out[0][1]) and guard.GUARD_HOOK in out[0][1]["hooks"].hooks
