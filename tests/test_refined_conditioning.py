"""Refined CONDITIONING is the input entry with a new tensor and nothing else, on every runtime:
no hooks, no marker keys, the same values; strength 0 returns the input exactly, for every family."""

import pytest
import torch

from dice_core.fileformat import RefinerBundle
from dice_core.refiner import KEEP_CLIP_CHUNK_START, KEEP_NONE, Refiner
from dice_testkit import tiny_models

# (family, embedding dim, conditioning): the text-encoder layouts of the tested families.
FAMILIES = {
    "SD15": (768, lambda: tiny_models.clip_conditioning(1, 768)),
    "SD15 long prompt": (768, lambda: tiny_models.clip_conditioning(2, 768, tokens=154)),
    "SDXL": (2048, lambda: tiny_models.clip_conditioning(3, 2048, pooled=1280)),
    "PixArtAlpha": (4096, lambda: tiny_models.t5_conditioning(4, words=6)),
}


def _bundle(family: str, dim: int) -> RefinerBundle:
    torch.manual_seed(0)
    if family == "PixArtAlpha":
        return RefinerBundle(module=Refiner(dim), family=family, keep_rule=KEEP_NONE, pad_to=120,
                             null_uc=torch.randn(1, 1, dim), pad_token=torch.randn(dim))
    return RefinerBundle(module=Refiner(dim), family=family.split()[0], keep_rule=KEEP_CLIP_CHUNK_START,
                         null_uc=torch.randn(1, 77, dim))


def _hooks_seen_by_sampler(conditioning) -> bool:
    """What the runtime's sampler decides from these conds: 0.33 asks cond_has_hooks (a dynamic-VRAM model
    is swapped for a non-dynamic copy when True); 0.3.75 has no such check and collects hooks with
    get_hooks_from_cond."""
    import comfy.hooks
    import comfy.sampler_helpers

    if hasattr(comfy.sampler_helpers, "cond_has_hooks"):
        return comfy.sampler_helpers.cond_has_hooks(conditioning)
    found = comfy.hooks.HookGroup()
    comfy.sampler_helpers.get_hooks_from_cond(comfy.sampler_helpers.convert_cond(conditioning), found)
    return len(found.hooks) > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_refined_entry_has_exactly_the_input_keys_and_values_and_no_hooks(comfy_nodes, family):
    dim, make = FAMILIES[family]
    cond = make()
    cond[0][1]["width"] = 1024  # an SDXL-encode-style extra must pass through as it is
    out = comfy_nodes["DiceRefineConditioning"].execute(cond, _bundle(family, dim), 1.0).args[0]
    (tensor, extras), (rtensor, rextras) = cond[0], out[0]
    assert rextras.keys() == extras.keys()
    assert all(rextras[k] is extras[k] for k in extras), "values must be the very same objects"
    assert rextras is not extras, "a copy, so a later node editing it cannot reach back into the input"
    assert not torch.equal(rtensor[:, : tensor.shape[1]], tensor), "the tensor is the one thing that changes"
    assert not _hooks_seen_by_sampler(out)
    assert not _hooks_seen_by_sampler(cond)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_strength_zero_returns_the_input_exactly(comfy_nodes, family):
    dim, make = FAMILIES[family]
    cond = make()
    out = comfy_nodes["DiceRefineConditioning"].execute(cond, _bundle(family, dim), 0.0).args[0]
    assert out[0][0] is cond[0][0], "the input tensor itself: same values, same token count"
    assert out[0][1] == cond[0][1]


def test_a_refiner_file_with_a_pad_length_pads_only_when_it_refines(comfy_nodes):
    """A PixArt refiner saved with a pad length (the pack trained PixArt padded to 120 before measuring that
    it is worse) still loads and works: above strength 0 the T5 prompt is padded to that length."""
    dim, make = FAMILIES["PixArtAlpha"]
    cond = make()
    out = comfy_nodes["DiceRefineConditioning"].execute(cond, _bundle("PixArtAlpha", dim), 0.05).args[0]
    assert cond[0][0].shape[1] == 7 and out[0][0].shape[1] == 120


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_refined_conditioning_samples_at_cfg_1_with_one_pass_per_step(comfy_nodes, family):
    """Through ComfyUI's own KSampler: cfg 1.0 keeps the fast path, with exactly one model row per step."""
    import nodes

    dim, pooled = (768, None) if family == "sd15" else (2048, 1280)
    cond = tiny_models.clip_conditioning(1, dim, pooled=pooled)
    refined = comfy_nodes["DiceRefineConditioning"].execute(cond, _bundle(family.upper(), dim), 1.0).args[0]
    negative = [[torch.zeros_like(cond[0][0]), dict(cond[0][1])]]
    counter = tiny_models.CallCounter()
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    nodes.common_ksampler(counter.attach(getattr(tiny_models, family)()), 3, 3, 1.0, "euler", "normal", refined,
                          negative, latent)
    assert counter.batches == [1, 1, 1]
    counter.batches.clear()
    nodes.common_ksampler(counter.attach(getattr(tiny_models, family)()), 3, 3, 5.0, "euler", "normal", cond,
                          negative, latent)
    assert counter.batches == [2, 2, 2], "cfg 5 sends cond and uncond: twice the rows"


def test_is_zeroed_out_is_exactly_the_all_zero_tensor():
    from dice_core.refiner import is_zeroed_out

    assert is_zeroed_out(torch.zeros(1, 77, 8))
    tiny = torch.zeros(1, 77, 8)
    tiny[0, 5, 3] = 1e-30
    assert not is_zeroed_out(tiny) and not is_zeroed_out(None) and not is_zeroed_out(torch.zeros(1, 0, 8))


def _zeroed(conditioning):
    """ComfyUI's own ConditioningZeroOut, as SDXL-era workflows feed KSampler's negative."""
    import nodes

    return nodes.NODE_CLASS_MAPPINGS["ConditioningZeroOut"]().zero_out(conditioning)[0]


def test_a_zeroed_negative_warns_unless_the_refiner_was_trained_against_one(comfy_nodes, caplog):
    from dice_comfy.conditioning import ZERO_NEGATIVE_WARNING

    refine = comfy_nodes["DiceRefineConditioning"]
    positive = tiny_models.clip_conditioning(1, 2048, pooled=1280)
    negative = _zeroed(tiny_models.clip_conditioning(2, 2048, pooled=1280))
    trained_on_text = _bundle("SDXL", 2048)
    with caplog.at_level("WARNING", logger="ComfyUI-DICE"):
        out = refine.execute(positive, trained_on_text, 1.0, negative).args[0]
    assert ZERO_NEGATIVE_WARNING in caplog.messages
    assert "ConditioningZeroOut" in ZERO_NEGATIVE_WARNING and "Disconnect the negative" in ZERO_NEGATIVE_WARNING
    # A warning, not a change: the zero uc is still what the refiner is given.
    assert torch.equal(out[0][0], trained_on_text.refine(positive[0][0], negative[0][0], 1.0))

    caplog.clear()
    trained_on_zeros = _bundle("SDXL", 2048)
    trained_on_zeros.null_uc = torch.zeros(1, 77, 2048)
    with caplog.at_level("WARNING", logger="ComfyUI-DICE"):
        refine.execute(positive, trained_on_zeros, 1.0, negative)
        refine.execute(positive, trained_on_text, 1.0, tiny_models.clip_conditioning(2, 2048, pooled=1280))
    assert ZERO_NEGATIVE_WARNING not in caplog.messages


def test_training_against_a_zeroed_negative_stores_the_zero_uc(comfy_nodes, comfy_dirs, caplog):
    """DICE Train Refiner with ConditioningZeroOut as its negative distils CFG against that zero uc; the refiner
    then takes the same zeroed negative without a warning."""
    patcher = tiny_models.sd15(seed=1)
    prompts = tiny_models.clip_conditioning(3, 768) + tiny_models.clip_conditioning(4, 768)
    negative = _zeroed(tiny_models.clip_conditioning(5, 768))
    with torch.inference_mode():
        bundle = comfy_nodes["DiceTrainRefiner"].execute(
            patcher, prompts="", prompts_file="(none)", steps=2, batch_size=2, guidance_scale=5.0, recipe="dice-pack",
            learning_rate=0.0, loss="auto", seed=0, width=64, height=64, samples_per_prompt=1, teacher_steps=2,
            save_every=0, filename_prefix="zeroed", gradient_checkpointing=False, autocast="none",
            conditioning=prompts, negative=negative).args[0]
    assert bundle.null_uc is not None and not torch.count_nonzero(bundle.null_uc)
    from dice_comfy.conditioning import ZERO_NEGATIVE_WARNING

    with caplog.at_level("WARNING", logger="ComfyUI-DICE"):
        comfy_nodes["DiceRefineConditioning"].execute([prompts[0]], bundle, 1.0, negative)
    assert ZERO_NEGATIVE_WARNING not in caplog.messages
