"""DICE Fast-Path Check: the optional node that warns when sampling cancels DICE's speed-up, checked on
real ComfyUI sampling (tiny SD1.5 and SDXL models). It works on a MODEL clone, so CONDITIONING and the
shared model are left as they are."""

import logging

import pytest
import torch

from dice_testkit import tiny_models

STEPS = 3


@pytest.fixture()
def check_node(comfy_nodes):
    return comfy_nodes["DiceFastPathCheck"]


@pytest.fixture()
def check_module():
    from dice_comfy import fast_path

    return fast_path


def _no_cfg1_fast_path(patcher):
    """What Self-Attention Guidance does: a post-CFG function registered with disable_cfg1_optimization=True."""
    p = patcher.clone()
    p.set_model_sampler_post_cfg_function(lambda args: args["denoised"], disable_cfg1_optimization=True)
    return p


def _sample(patcher, positive, cfg, seed=3):
    import nodes

    negative = [[torch.zeros_like(positive[0][0]), dict(positive[0][1])]]
    counter = tiny_models.CallCounter()
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    (out,) = nodes.common_ksampler(counter.attach(patcher), seed, STEPS, cfg, "euler", "normal", positive, negative, latent)
    return out["samples"], counter.batches


def _dice_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ComfyUI-DICE" and r.levelno >= logging.WARNING]


def test_check_model_options(check_module, caplog):
    caplog.set_level(logging.WARNING, logger="ComfyUI-DICE")
    assert check_module.check_model_options({}) is None
    assert check_module.check_model_options(None) is None
    assert check_module.check_model_options({"disable_cfg1_optimization": False}) is None
    assert check_module.check_model_options({"disable_cfg1_optimization": True}, cfg=5.0) is None, "no fast path at cfg 5"
    assert not _dice_warnings(caplog)
    msg = check_module.check_model_options({"disable_cfg1_optimization": True}, cfg=1.0)
    assert msg and "disable_cfg1_optimization" in msg and "speed-up" in msg
    assert _dice_warnings(caplog) == [msg]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_checked_model_samples_identically_keeps_the_fast_path_and_leaves_the_input_model(check_node, check_module,
                                                                                         family, caplog):
    import comfy.patcher_extension

    caplog.set_level(logging.WARNING, logger="ComfyUI-DICE")
    patcher = getattr(tiny_models, family)()
    dim, pooled = (768, None) if family == "sd15" else (2048, 1280)
    cond = tiny_models.clip_conditioning(1, dim, pooled=pooled)
    checked = check_node.execute(patcher).args[0]
    assert checked is not patcher and checked.model is patcher.model, "a clone that shares the weights"
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    assert not patcher.wrappers.get(outer), "the input MODEL must not gain the wrapper"
    assert check_module.WRAPPER_KEY in checked.wrappers[outer]
    out_plain, calls_plain = _sample(patcher, cond, 1.0)
    out_checked, calls_checked = _sample(checked, cond, 1.0)
    assert torch.equal(out_plain, out_checked), "the check must not change the result"
    assert calls_checked == calls_plain == [1] * STEPS, "cfg 1.0 must still skip the unconditional pass"
    assert not _dice_warnings(caplog)
    # Checking twice keeps one wrapper.
    twice = check_node.execute(checked).args[0]
    assert len(twice.wrappers[outer][check_module.WRAPPER_KEY]) == 1


def test_warns_once_per_run_when_the_fast_path_is_disabled(check_node, check_module, caplog):
    caplog.set_level(logging.WARNING, logger="ComfyUI-DICE")
    base = tiny_models.sd15()
    cond = tiny_models.clip_conditioning(1, 768)

    _, calls = _sample(_no_cfg1_fast_path(base), cond, 1.0)
    assert calls == [2] * STEPS, "the uncond pass is back: this is what the warning is about"
    assert not _dice_warnings(caplog), "only a checked model warns"

    # The check sees patches added after it, too (SAG placed between the check and the KSampler).
    checked = _no_cfg1_fast_path(check_node.execute(base).args[0])
    _, calls = _sample(checked, cond, 1.0)
    assert calls == [2] * STEPS
    assert _dice_warnings(caplog) == [check_module.CFG1_DISABLED_WARNING]
    _sample(checked, cond, 1.0, seed=4)
    assert len(_dice_warnings(caplog)) == 2, "once per sampling run, not per step"


def test_warns_when_sampled_above_cfg_1(check_node, caplog):
    caplog.set_level(logging.WARNING, logger="ComfyUI-DICE")
    _sample(check_node.execute(tiny_models.sd15()).args[0], tiny_models.clip_conditioning(1, 768), 5.0)
    (msg,) = _dice_warnings(caplog)
    assert "cfg 5" in msg and "twice" in msg


def test_a_failing_check_never_breaks_sampling(check_node, check_module, monkeypatch):
    def boom(_guider):
        raise RuntimeError("diagnostic bug")

    monkeypatch.setattr(check_module, "check_guider", boom)
    out, _ = _sample(check_node.execute(tiny_models.sd15()).args[0], tiny_models.clip_conditioning(1, 768), 1.0)
    assert torch.isfinite(out).all()
