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
