"""toyworld/diagnose.py on world 1's shipped base model: the two measurements it separates (the denoiser on
true images, and KSampler from true latents) read what they claim to. The thresholds are the shipped model's
measured behaviour with a wide margin (x0 rmse 0.017 at sigma 0.03, img2img rmse 0.073 and saturation 0.001 at
denoise 0.2, on 16 images); a wrong sigma or latent convention puts them near 1.
"""
from __future__ import annotations

import pytest
import torch

from dice_testkit import harness
from toyworld import diagnose


@pytest.fixture(scope="module")
def world1():
    harness.setup_comfy()
    from toyworld import comfy_objects as co

    model, clip, _ = co.load_toy_world()
    batch = diagnose._world(1)
    images, captions = batch(8, torch.Generator().manual_seed(0))
    return model, clip, images, captions


def test_denoiser_is_accurate_at_low_noise_and_blind_at_sigma_max(world1):
    low, high = diagnose.denoiser_errors(*world1, sigmas=(0.03, 14.6))
    assert low["x0_rmse"] < 0.05 and low["spread_across_noise"] < 0.05
    # at sigma_max one call sees almost only noise: its x0 is far from the image
    assert high["x0_rmse"] > 5 * low["x0_rmse"]


def test_light_img2img_returns_the_input_unsaturated(world1):
    (row,) = diagnose.img2img_saturation(*world1, denoise=(0.2,))
    assert row["rmse_to_input"] < 0.2 and row["saturation"] < 0.02


def test_world2_batches_carry_full_captions():
    batch = diagnose._world(2)
    images, captions = batch(4, torch.Generator().manual_seed(0))
    assert images.shape == (4, 3, 24, 24) and len(captions) == 4 and all(isinstance(c, str) and c for c in captions)
