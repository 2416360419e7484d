"""Tests for the toy world (toyworld/): world, tokenizer, split, shipped weights, ComfyUI objects.

Fast (a few seconds on one CPU thread). ComfyUI is set up by the project's harness (dice_testkit).
"""
from __future__ import annotations

import os

import pytest
import torch

from dice_testkit import harness
from toyworld import world
from toyworld.text_encoder import DEFAULT_SEED, ToyTextEncoder

ROOT = harness.REPO

WEIGHTS = os.path.join(ROOT, "toyworld", "weights")


# ----------------------------------------------------------------------------- pure torch
def _all_combos(repeat=2):
    idx = torch.arange(world.N_COMBOS).repeat(repeat)
    return world.combo_from_index(idx)


def test_analyser_exact_on_clean_and_noisy_renders():
    g = torch.Generator().manual_seed(0)
    ci, si, pi = _all_combos(2)
    img = world.render(ci, si, pi, g)
    clean = world.score(img, ci, si, pi)
    assert clean["all"] == 1.0, clean
    for std in (0.1, 0.2):
        noisy = world.score(img + std * torch.randn(img.shape, generator=g), ci, si, pi)
        assert noisy["all"] == 1.0, (std, noisy)
    # and through the latent map
    back = world.latent_to_rgb(world.rgb_to_latent(img))
    assert world.score(back, ci, si, pi)["all"] == 1.0


def test_analyser_rejects_empty_image():
    a = world.analyse(-torch.ones(1, 3, world.RES, world.RES))
    assert a["colour"].item() == -1 and a["shape"].item() == -1 and a["position"].item() == -1


def test_tokenizer_clip_layout():
    ids = world.tokenize("a red square on the left")
    v = world.VOCAB
    assert len(ids) == world.SEQ_LEN == 16
    assert ids[:8] == [world.START_ID, v["a"], v["red"], v["square"], v["on"], v["the"], v["left"], world.END_ID]
    assert ids[8:] == [world.PAD_ID] * 8
    assert world.tokenize("") == [world.START_ID, world.END_ID] + [world.PAD_ID] * 14
    assert world.tokenize("A RED, square!") == world.tokenize("a red square")
    assert world.tokenize("a purple blob")[2:4] == [world.UNK_ID, world.UNK_ID]
    long = world.tokenize(" ".join(["red"] * 40))
    assert len(long) == 16 and long[0] == world.START_ID and long[-1] == world.END_ID
    assert world.tokenize_batch(["a", "b c"]).shape == (2, 16)


def test_captions_parse_back():
    for c in world.ALL_COMBOS:
        assert world.parse_caption(world.caption(*c)) == tuple(int(x) for x in c)
    assert world.parse_caption("a red dog") is None


def test_held_out_split():
    held = {tuple(int(x) for x in c) for c in world.HELD_OUT_COMBOS}
    train = {tuple(int(x) for x in c) for c in world.TRAIN_COMBOS}
    assert len(held) == 18 and len(train) == 54 and not (held & train)
    assert all(p == (c + s) % 4 for c, s, p in held)
    # every attribute pair of a held-out combination is still seen in training
    for c, s, p in held:
        assert any(t[0] == c and t[1] == s for t in train)
        assert any(t[0] == c and t[2] == p for t in train)
        assert any(t[1] == s and t[2] == p for t in train)
    # neither the images nor the (noisy) captions of training batches are held out
    g = torch.Generator().manual_seed(1)
    seen_noisy = 0
    for _ in range(4):
        _, (ci, si, pi), cap = world.train_batch(2048, g, noise_p=0.3)
        assert not world.is_held_out(ci, si, pi).any()
        cc, cs, cp = world.combo_from_index(cap)
        assert not world.is_held_out(cc, cs, cp).any()
        seen_noisy += int((cap != world.combo_index(ci, si, pi)).sum())
    assert seen_noisy > 0.3 * 4 * 2048  # caption noise is really applied


def test_caption_noise_rate():
    g = torch.Generator().manual_seed(2)
    ci, si, pi = world.sample_train_combos(20000, g)
    cc, cs, cp = world.corrupt(ci, si, pi, 0.3, g)
    # Nominal P(attribute changed) = 0.3 * (k-1)/k; redrawing captions that would name a held-out
    # combination lowers it somewhat (measured: colour 0.21, shape 0.17, position 0.19).
    for new, old, k in ((cc, ci, 6), (cs, si, 3), (cp, pi, 4)):
        rate = (new != old).float().mean().item()
        assert 0.12 < rate < 0.3 * (k - 1) / k + 0.01, (k, rate)
    assert world.corrupt(ci, si, pi, 0.0, g)[0].equal(ci)


def test_latent_map_is_orthonormal():
    m = world.LATENT_MAP
    assert m.shape == (4, 3)
    assert torch.allclose(m.T @ m, torch.eye(3))


def test_text_encoder_shipped_weights_match_seed():
    shipped = ToyTextEncoder.load(os.path.join(WEIGHTS, "text_encoder.safetensors"))
    fresh = ToyTextEncoder.from_seed(DEFAULT_SEED)
    for (k, a), (k2, b) in zip(shipped.state_dict().items(), fresh.state_dict().items()):
        assert k == k2 and torch.allclose(a, b, atol=1e-6), k
    e = shipped.encode_text(["a red square on the left", ""])
    assert e.shape == (2, 16, 64) and torch.isfinite(e).all()
    # causal: the start token embedding is the same for every caption
    assert torch.allclose(e[0, 0], e[1, 0], atol=1e-5)
    # words matter: two captions differing in one word differ at that token
    e2 = shipped.encode_text(["a green square on the left"])
    assert (e[0, 2] - e2[0, 2]).norm() > 1.0


# ----------------------------------------------------------------------------- ComfyUI
@pytest.fixture(scope="module")
def comfy_world():
    harness.setup_comfy()
    from toyworld import comfy_objects as co

    return co, co.load_toy_world()


def test_model_is_real_sd15_model_patcher(comfy_world):
    import comfy.model_base
    import comfy.model_patcher
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    co, (model, clip, vae) = comfy_world
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert isinstance(model.model, comfy.model_base.BaseModel)
    assert type(model.model.model_config).__name__ == "SD15"
    assert model.model.model_type == comfy.model_base.ModelType.EPS
    dm = model.model.diffusion_model
    assert isinstance(dm, UNetModel) and dm.in_channels == 4
    assert all(torch.isfinite(p).all() for p in dm.parameters())
    n = sum(p.numel() for p in dm.parameters())
    assert n < 3_000_000
    meta = co.read_metadata(co.UNET_PATH)
    for key in ("seed", "steps", "command", "unet_config"):
        assert key in meta


def test_clip_text_encode_node_accepts_toy_clip(comfy_world):
    import nodes

    co, (model, clip, vae) = comfy_world
    (cond,) = nodes.CLIPTextEncode().encode(clip, "a red square on the left")
    assert isinstance(cond, list) and len(cond) == 1
    tensor, extra = cond[0]
    assert tensor.shape == (1, world.SEQ_LEN, 64)
    assert extra["pooled_output"].shape == (1, 64)
    direct = ToyTextEncoder.load(co.TEXT_ENCODER_PATH).encode_text(["a red square on the left"])
    assert torch.allclose(tensor, direct, atol=1e-5)
    # ComfyUI's prompt weights push tokens away from the empty prompt, as for SD1.5
    (weighted,) = nodes.CLIPTextEncode().encode(clip, "a (red:1.5) square on the left")
    assert not torch.allclose(weighted[0][0][0, 2], tensor[0, 2])
    assert torch.allclose(weighted[0][0][0, 3], tensor[0, 3], atol=1e-5)
    clip2 = clip.clone()
    clip2.clip_layer(-2)
    (c2,) = nodes.CLIPTextEncode().encode(clip2, "a red square on the left")
    assert c2[0][0].shape == tensor.shape and not torch.allclose(c2[0][0], tensor)


def test_common_ksampler_four_steps(comfy_world):
    import nodes

    co, (model, clip, vae) = comfy_world
    pos = nodes.CLIPTextEncode().encode(clip, "a blue cross at the top")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = co.empty_latent(2)
    for cfg in (1.0, 5.0):
        out = nodes.common_ksampler(model, 0, 4, cfg, "euler", "normal", pos, neg, latent)[0]["samples"]
        assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()
    # EmptyLatentImage at 128x128 is the toy resolution
    assert nodes.EmptyLatentImage().generate(128, 128, 1)[0]["samples"].shape == (1, 4, 16, 16)


def test_vae_nodes_roundtrip(comfy_world):
    import nodes

    co, (model, clip, vae) = comfy_world
    g = torch.Generator().manual_seed(3)
    ci, si, pi = world.combo_from_index(torch.tensor([0, 17, 40]))
    rgb = world.render(ci, si, pi, g)
    latent = {"samples": world.rgb_to_latent(rgb)}
    (image,) = nodes.VAEDecode().decode(vae, latent)
    assert image.shape == (3, 128, 128, 3) and image.min() >= 0 and image.max() <= 1
    (enc,) = nodes.VAEEncode().encode(vae, image)
    assert enc["samples"].shape == (3, 4, 16, 16)
    assert torch.allclose(world.latent_to_rgb(enc["samples"]), rgb, atol=1e-5)


def test_sample_and_score_smoke(comfy_world):
    from toyworld.evaluate import SamplingOptions, sample_and_score

    co, (model, clip, vae) = comfy_world
    prompts = world.HELD_OUT_CAPTIONS[:2]
    calls = []

    def ident(c):
        calls.append(c)
        return c

    r = sample_and_score(model, clip, prompts, [0, 1], cfg=2.0, sampling=SamplingOptions(steps=2), positive_transform=ident)
    assert r["latents"].shape == (4, 4, 16, 16) and r["n"] == 4 and len(calls) == 2
    for k in ("all", "colour", "shape", "position"):
        assert 0.0 <= r[k] <= 1.0
    # a pair's noise does not depend on the other prompts in the batch
    r1 = sample_and_score(model, clip, prompts[1:], [1], cfg=2.0, sampling=SamplingOptions(steps=2))
    assert torch.allclose(r1["latents"][0], r["latents"][3], atol=1e-4)


def test_sampling_keeps_every_timestep_range_entry_of_a_transform(comfy_world):
    """A transform may split a prompt into CONDITIONING entries with start_percent/end_percent (one per timestep
    range): batching keeps each entry, so the sampler uses the early one early and the late one late."""
    from toyworld.evaluate import SamplingOptions, sample_and_score

    co, (model, clip, vae) = comfy_world
    prompts = world.HELD_OUT_CAPTIONS[:2]
    options = SamplingOptions(steps=4)

    def split(late):
        return lambda cond: [[cond[0][0], {**cond[0][1], "start_percent": 0.0, "end_percent": 0.5}],
                             [late(cond[0][0]), {**cond[0][1], "start_percent": 0.5, "end_percent": 1.0}]]

    plain = sample_and_score(model, clip, prompts, [0], cfg=1.0, sampling=options)["latents"]
    same = sample_and_score(model, clip, prompts, [0], cfg=1.0, sampling=options, positive_transform=split(lambda t: t))
    # each step sees exactly one entry, holding the same tensor as the unsplit prompt: the same arithmetic
    assert torch.equal(same["latents"], plain)
    other = sample_and_score(model, clip, prompts, [0], cfg=1.0, sampling=options,
                             positive_transform=split(lambda t: torch.zeros_like(t)))
    assert (other["latents"] - plain).abs().max() > 0.05  # the late entry is the one used late
