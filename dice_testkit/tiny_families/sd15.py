"""SD 1.x: a tiny UNet (comfy.ldm.modules.diffusionmodules.openaimodel) from ComfyUI's SD15 config.
CLIP-L emits 77 tokens per 75-word chunk: a start token, the words, then end-token padding."""

import torch

from dice_testkit import tiny_models

FAMILY = "SD15"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 768
WIDTH, HEIGHT, FRAMES = 64, 64, None
NOTES = "CLIP-L, 77 tokens per chunk; the start token of each chunk is kept"


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    if full_size:
        raise NotImplementedError("benchmarks/gpu_bench.py builds the full-size SD1.5 UNet")
    return tiny_models.sd15(seed=seed, dtype=dtype)


def prompt(words: tuple[int, ...]) -> list:
    return tiny_models.vocab_conditioning(words, EMBED_DIM)[0]


def empty_latent(batch: int = 1) -> torch.Tensor:
    import nodes

    return nodes.EmptyLatentImage().generate(WIDTH, HEIGHT, batch)[0]["samples"]
