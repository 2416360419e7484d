"""SDXL: a tiny UNet from ComfyUI's SDXL config (linear transformer projections, ADM input 2816).
CLIP-L and CLIP-G concatenated to 2048 per token, 77 tokens per chunk; pooled CLIP-G output (1, 1280)."""

import torch

from dice_testkit import tiny_models

FAMILY = "SDXL"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 2048
WIDTH, HEIGHT, FRAMES = 64, 64, None
NOTES = "CLIP-L+G, 77 tokens per chunk, start tokens kept; pooled output and size inputs pass through"


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    if full_size:
        raise NotImplementedError("benchmarks/gpu_bench.py builds the full-size SDXL UNet")
    return tiny_models.sdxl(seed=seed, dtype=dtype)


def prompt(words: tuple[int, ...]) -> list:
    return tiny_models.vocab_conditioning(words, EMBED_DIM, pooled=1280)[0]


def empty_latent(batch: int = 1) -> torch.Tensor:
    import nodes

    return nodes.EmptyLatentImage().generate(WIDTH, HEIGHT, batch)[0]["samples"]
