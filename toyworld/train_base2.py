"""Train toy world 2's base UNet (issue 13): train_base.py's loop, objective, EMA, resumable state and
metadata, with world 2's data and a larger-latent UNet (comfy_objects.WORLD2_UNET_CONFIG).

Data: training scenes only (world2.train_batch: random phrasing and subject order, colours omitted with
probability 0.2, caption noise --noise per specified attribute, redrawn when it would name a held-out scene).
Captions are sampled per batch and encoded by the frozen world-2 text encoder per batch (it is 0.1M parameters,
negligible beside the UNet); 10% of them are replaced by the null prompt "". --eval-seeds N evaluates cfg 1/3/5
on world2.VALIDATION_CAPTIONS x N seeds after training and records the table in the file's metadata.

    OMP_NUM_THREADS=1 python -m toyworld.train_base2 --seed 0 --steps 1000 --batch 64 --threads 1 \
        --out /tmp/w2/base_unet.safetensors --save-every 200 --state /tmp/w2/state.pt --eval-seeds 4
"""
from __future__ import annotations

import os
import shlex
import sys

import torch

from . import world2
from .text_encoder import ToyTextEncoder
from .train_base import HERE, Recipe
from .train_base import main as train_main


class World2Batches:
    """World 2's data, captions encoded per batch."""

    res = world2.RES

    def __init__(self, text_encoder: ToyTextEncoder, a):
        if text_encoder.vocabulary is not world2:
            raise ValueError("world 2 needs the world-2 text encoder (weights/world2/text_encoder.safetensors)")
        self.encoder = text_encoder
        self.noise = a.noise
        self.null = text_encoder.encode_text([""])[0]
        # a fixed pair of training captions, from its own generator so the training stream is untouched
        self.check_context = text_encoder(world2.train_batch(2, torch.Generator().manual_seed(0))["tokens"]).float()

    def batch(self, n: int, g: torch.Generator):
        b = world2.train_batch(n, g, self.noise)
        return world2.rgb_to_latent(b["images"]), self.encoder(b["tokens"]).float()


def evaluate_world2(a, path: str) -> dict:
    """The validation table (cfg 1, 3, 5; a.eval_seeds seeds), for the file's metadata."""
    import json

    from .evaluate2 import evaluate_file

    rows = evaluate_file(path, a.text_encoder, range(a.eval_seeds), (1.0, 3.0, 5.0))
    command = "python -m toyworld.train_base2 " + shlex.join(sys.argv[1:])
    return {"evaluation": json.dumps(rows), "evaluation_command": command,
            "evaluation_prompts": f"world2.VALIDATION_CAPTIONS ({len(world2.VALIDATION_CAPTIONS)})"}


def _recipe() -> Recipe:
    from .comfy_objects import WORLD2_UNET_CONFIG

    weights = os.path.join(HERE, "weights", "world2")
    return Recipe(
        module="toyworld.train_base2", unet_config=WORLD2_UNET_CONFIG,
        text_encoder=os.path.join(weights, "text_encoder.safetensors"),
        out=os.path.join(weights, "base_unet.safetensors"),
        held_out_rule="(colour1 + shape1 + colour2 + shape2 + axis) % 3 == 0 and object 1 > object 2 "
                      "(toyworld.world2.is_held_out)",
        make_batches=World2Batches, evaluate=evaluate_world2,
    )


def main(argv=None):
    from dice_comfy.setup import setup_comfy

    setup_comfy(pytorch_attention=True)  # comfy_objects (the UNet config) needs ComfyUI importable
    train_main(argv, _recipe(), __doc__)


if __name__ == "__main__":
    main()
