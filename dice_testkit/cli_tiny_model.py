"""The tiny SD1.5 behind the command-line trainer's test-only `--checkpoint tiny-sd15:SEED`, and torchrun's
entry point for tests/test_cli_distributed.py:

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m dice_testkit.cli_tiny_model train ...

A stand-in text encoder and VAE go with the tiny model, since no weights can be downloaded.
"""

from __future__ import annotations

import os
import sys

import torch

from dice_cli import cli, models
from dice_testkit import tiny_models


class FakeClip:
    """Stands in for the text encoder: each prompt maps to fixed random CLIP-shaped tokens."""

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, text):
        return tiny_models.clip_conditioning(sum(map(ord, text)) + 17 * len(text), 768)


class FakeVAE:
    """Stands in for the VAE: 8x area downscale and a fixed 3 -> 4 channel map, like SD's latent layout."""

    MAP = 0.5 * torch.tensor([[1.0, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1]])

    def encode(self, pixels):
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1) * 2 - 1, 8)
        return torch.einsum("ck,bkhw->bchw", self.MAP, x)


def tiny_sd15(arg: str):
    return tiny_models.sd15(seed=int(arg or 0)), FakeClip(), FakeVAE()


models.register("tiny-sd15", tiny_sd15)  # test-only: a hidden --checkpoint name

def inject_failure(spec: str) -> None:
    """DICE_TEST_FAIL=RANK:STEP makes that rank raise in the loss of that step (test-only)."""
    import dice_core.training as training

    rank, step = (int(x) for x in spec.split(":"))
    if int(os.environ.get("RANK", "0")) != rank:
        return
    original, calls = training.distillation_loss, [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == step:
            raise RuntimeError(f"injected failure at step {step}")
        return original(*args, **kwargs)

    training.distillation_loss = failing



if __name__ == "__main__":  # torchrun's entry point for the tests
    from dice_testkit import harness

    harness.setup_comfy()
    torch.set_num_threads(1)
    if os.environ.get("DICE_TEST_FAIL"):
        inject_failure(os.environ["DICE_TEST_FAIL"])
    sys.exit(cli.main(sys.argv[1:]))
