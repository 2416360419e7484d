"""Where a toy base model's samples go wrong (issue 13): is it the denoiser, or the sampling trajectory?

World 2's first base model was rejected by the strict analyser on every validation image, for saturation
(21-25% of the pixels beyond [-1.2, 1.2]). This script separates the two possible causes, on either world:

1. The denoiser on true images: noise training images to a fixed sigma, call the model once
   (BaseModel.apply_model, ComfyUI's own denoised output) and measure the x0 error. Near sigma_max
   the ideal x0 for one prompt is nearly the same whatever the noise, so the spread of the
   predictions across noise draws is also printed: it should be near 0.
2. The trajectory: KSampler (euler, normal, 20 steps, cfg 1) from true latents at denoise 0.2 .. 1.0
   (img2img), and the saturation rate of what comes out. Denoise 1.0 is sampling from noise.

    python -m toyworld.diagnose --world 1                 # the shipped world-1 model
    python -m toyworld.diagnose --world 2 --unet FILE     # a world-2 base_unet file

Saturation is world2.saturation_rate (the strict analyser's): share of pixels with a channel beyond
[-1.2, 1.2], before clamping.
"""
from __future__ import annotations

import argparse

import torch

from . import world, world2
from .evaluate import SamplingOptions, conditioning

SIGMAS = (0.03, 0.3, 1.0, 3.0, 14.6)
DENOISE = (0.2, 0.4, 0.6, 0.8, 1.0)


def _world(which: int):
    """The world's training images: (n, generator) -> (images (n, 3, R, R), their captions)."""
    if which == 1:
        def batch(n, g):
            images, (ci, si, pi), _ = world.train_batch(n, g, noise_p=0.0)
            return images, [world.caption(*a) for a in zip(ci.tolist(), si.tolist(), pi.tolist())]
        return batch

    def batch(n, g):
        b = world2.train_batch(n, g, noise_p=0.0, omit_p=0.0)
        return b["images"], b["captions"]
    return batch


def denoiser_errors(model, clip, images, captions, sigmas=SIGMAS, seed: int = 0) -> list[dict]:
    """Per sigma: x0 rmse of one denoiser call on the true images noised to sigma, and the mean std of the
    predictions across 4 noise draws of the same image (rgb units)."""
    context = conditioning(clip, captions, SamplingOptions())[0][0][0]
    x0 = world.rgb_to_latent(images)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in sigmas:
        preds = []
        for _ in range(4):
            noisy = x0 + sigma * torch.randn(x0.shape, generator=g)
            with torch.no_grad():
                den = model.model.apply_model(noisy, torch.full((len(x0),), float(sigma)), c_crossattn=context)
            preds.append(world.latent_to_rgb(den.float()))
        preds = torch.stack(preds)
        rows.append({"sigma": sigma, "x0_rmse": (preds - images).pow(2).mean().sqrt().item(),
                     "spread_across_noise": preds.std(0).mean().item()})
    return rows


def img2img_saturation(model, clip, images, captions, denoise=DENOISE, seed: int = 0) -> list[dict]:
    """Per denoise strength: saturation rate and rmse to the input after KSampler from the true latents."""
    import comfy.utils

    import nodes

    positive, negative = conditioning(clip, captions, SamplingOptions())
    old = comfy.utils.PROGRESS_BAR_ENABLED
    comfy.utils.PROGRESS_BAR_ENABLED = False
    rows = []
    try:
        for d in denoise:
            latent = {"samples": world.rgb_to_latent(images)}
            out = nodes.common_ksampler(model, seed, 20, 1.0, "euler", "normal", positive, negative, latent,
                                        denoise=d)[0]["samples"]
            rgb = world.latent_to_rgb(out.float())
            rows.append({"denoise": d, "saturation": world2.saturation_rate(rgb).mean().item(),
                         "rmse_to_input": (rgb - images).pow(2).mean().sqrt().item()})
    finally:
        comfy.utils.PROGRESS_BAR_ENABLED = old
    return rows


def main(argv=None):
    from dice_comfy.setup import setup_comfy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=int, choices=[1, 2], default=1)
    p.add_argument("--unet", default=None, help="base_unet file (default: the world's shipped one)")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    setup_comfy()
    from . import comfy_objects as co

    if a.world == 1:
        model, clip, _ = co.load_toy_world(*([a.unet] if a.unet else []))
    else:
        model, clip, _ = co.load_toy_world2(*([a.unet] if a.unet else []))
    batch = _world(a.world)
    images, captions = batch(a.images, torch.Generator().manual_seed(0))
    print(f"world {a.world}, {a.unet or 'shipped model'}, {a.images} training images")
    for r in denoiser_errors(model, clip, images, captions):
        print(f"denoiser at sigma {r['sigma']:5.2f}: x0 rmse {r['x0_rmse']:.3f}, spread across noise draws "
              f"{r['spread_across_noise']:.3f}")
    for r in img2img_saturation(model, clip, images, captions):
        print(f"KSampler from the true latent at denoise {r['denoise']:.1f}: saturation {r['saturation']:.3f}, "
              f"rmse to input {r['rmse_to_input']:.3f}")


if __name__ == "__main__":
    main()
