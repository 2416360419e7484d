"""PixArt-alpha: a tiny PixArt DiT (comfy.ldm.pixart) with micro-conditioning.
T5-XXL in ComfyUI emits no padding (the words and an end token), and the refiner adds none:
padding to the 120 tokens PixArt-alpha was trained on measured worse (benchmarks/padding_study.py)."""

import torch

from dice_testkit import tiny_models

FAMILY = "PixArtAlpha"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 4096
WIDTH, HEIGHT, FRAMES = 320, 320, None  # PixArt needs a latent at least 33 wide
NOTES = ("T5-XXL without padding (words + end token), kept unpadded: padding to the 120 tokens PixArt-alpha was trained on "
         "measured worse (held-out 0.82x of the unrefined loss against 0.67x, benchmarks/padding_study.py)")


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    if full_size:
        raise NotImplementedError("full-size PixArt is not part of the GPU benchmark")
    return tiny_models.pixart_alpha(seed=seed, dtype=dtype)


def prompt(words: tuple[int, ...]) -> list:
    return tiny_models.vocab_conditioning(words, EMBED_DIM, t5=True)[0]


def empty_latent(batch: int = 1) -> torch.Tensor:
    import nodes

    return nodes.EmptyLatentImage().generate(WIDTH, HEIGHT, batch)[0]["samples"]
