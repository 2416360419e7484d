"""dice_testkit/make_tiny_checkpoint.py writes an SD1.5 file that ComfyUI's checkpoint loader detects and that
samples end to end (text encoder, KSampler, VAE) with finite values.

    .venv/bin/python -m pytest -m e2e tests/test_tiny_checkpoint.py
"""

import os

import pytest
import torch

from dice_testkit import make_tiny_checkpoint

pytestmark = pytest.mark.e2e


def test_loads_as_sd15_and_samples(tiny_checkpoint, comfy_nodes):
    import nodes
    from dice_comfy import internals

    # What CheckpointLoaderSimple.load_checkpoint does once it has resolved the file name, through the
    # pack's one entry to ComfyUI internals (the command-line trainer loads checkpoints with it).
    model, clip, vae = internals.load_checkpoint(tiny_checkpoint)
    assert type(model.model.model_config).__name__ == "SD15"
    assert type(vae.first_stage_model).__name__ == "TAESD"
    unet_params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    assert 15e6 < unet_params < 30e6, unet_params  # one level, one res block, one transformer block
    with torch.inference_mode():
        (pos,) = nodes.CLIPTextEncode().encode(clip, "a photo of a cat")
        (neg,) = nodes.CLIPTextEncode().encode(clip, "")
        assert pos[0][0].shape == (1, 77, 768) and torch.isfinite(pos[0][0]).all()
        assert not torch.equal(pos[0][0], neg[0][0]), "the text encoder must depend on the prompt"
        assert pos[0][0].abs().mean() > 0.1
        latent = {"samples": torch.zeros(1, 4, 8, 8)}
        (out,) = nodes.common_ksampler(model, 1, 4, 5.0, "euler", "normal", pos, neg, latent)
        assert torch.isfinite(out["samples"]).all()
        (image,) = nodes.VAEDecode().decode(vae, out)
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


def test_is_reused_and_seeded(tiny_checkpoint):
    from safetensors import safe_open

    mtime = os.path.getmtime(tiny_checkpoint)
    assert make_tiny_checkpoint.ensure_tiny_checkpoint(tiny_checkpoint) == tiny_checkpoint
    assert os.path.getmtime(tiny_checkpoint) == mtime, "an existing checkpoint with the same seed is not rewritten"
    with safe_open(tiny_checkpoint, "pt") as f:
        assert f.metadata()["seed"] == "0"
        keys = list(f.keys())
        assert all(f.get_slice(k).get_dtype() in ("F16", "I64") for k in keys[:50])
        first = f.get_tensor(keys[0])
    assert any(k.startswith("cond_stage_model.transformer.text_model.encoder.layers.11.") for k in keys), "full CLIP-L"
    assert any(k.startswith("first_stage_model.taesd_decoder.") for k in keys)
    # The same seed gives the same values (checked on the first tensor in sorted order; the generator is sequential).
    again = make_tiny_checkpoint._value(keys[0], first.shape, torch.Generator().manual_seed(0)).to(first.dtype)
    assert torch.equal(first, again)
