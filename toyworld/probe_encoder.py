"""Does the frozen world-2 text encoder carry a caption's scene? A readout probe (issue 13's base-model diagnosis).

A world-2 base model that draws the wrong objects could fail in two places: the frozen, seeded text encoder might
not separate "a red square left of a blue cross" from its rebindings, or the UNet might not learn to read what it
gets. This trains a small readout on the encoder's token states, one attention query per scene field (colour and
shape of the left/top object, of the right/bottom one, and the axis), on clean training captions in random
phrasings (world2.train_batch without noise or omitted colours), and scores it on the held-out validation
captions, which it never saw. If the readout recovers held-out scenes, the encoder is not what limits the base
model.

    OMP_NUM_THREADS=1 .venv/bin/python -m toyworld.probe_encoder            # the shipped world-2 encoder
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from . import world2
from .text_encoder import ToyTextEncoder, default_path

# Classes per scene field: world2.SCENE_FIELDS = colour1, shape1, colour2, shape2, axis.
FIELD_CLASSES = (world2.N_COLOURS, world2.N_SHAPES, world2.N_COLOURS, world2.N_SHAPES, len(world2.AXES))


class SceneReadout(nn.Module):
    """One learned query per scene field attends over the token states; a linear head per field classifies."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(len(FIELD_CLASSES), dim))
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.heads = nn.ModuleList(nn.Linear(dim, n) for n in FIELD_CLASSES)

    def forward(self, states: torch.Tensor) -> list[torch.Tensor]:
        read, _ = self.attention(self.queries.expand(len(states), -1, -1), states, states)
        return [head(read[:, i]) for i, head in enumerate(self.heads)]


def field_accuracy(readout: SceneReadout, states: torch.Tensor, scenes: torch.Tensor) -> dict:
    with torch.no_grad():
        right = torch.stack([logits.argmax(1) == scenes[:, i] for i, logits in enumerate(readout(states))])
    return {"per_field": dict(zip(world2.SCENE_FIELDS, right.float().mean(1).tolist())),
            "whole_scene": right.all(0).float().mean().item(), "n": len(scenes)}


def probe(encoder: ToyTextEncoder, steps: int = 1500, batch: int = 128, seed: int = 0) -> dict:
    """Train the readout for `steps` on clean training captions; score it on the held-out validation captions."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    encoder = encoder.eval().requires_grad_(False)
    readout = SceneReadout(encoder.config()["dim"])
    opt = torch.optim.Adam(readout.parameters(), lr=3e-3)
    t0 = time.time()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        b = world2.train_batch(batch, g, noise_p=0.0, omit_p=0.0)
        with torch.no_grad():
            states = encoder(b["tokens"])
        loss = sum(nn.functional.cross_entropy(logits, b["scenes"][:, i]) for i, logits in enumerate(readout(states)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    captions = world2.VALIDATION_CAPTIONS
    with torch.no_grad():
        states = encoder(world2.tokenize_batch(captions))
    return {"held_out": field_accuracy(readout, states, world2.scenes_from_specs(world2.caption_targets(captions))),
            "steps": steps, "batch": batch, "seed": seed, "final_loss": loss.detach().item(), "seconds": time.time() - t0}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default=default_path("2"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    result = probe(ToyTextEncoder.load(a.encoder), a.steps, seed=a.seed)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
