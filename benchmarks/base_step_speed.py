"""Seconds per training step of toy world 2's base UNet (toyworld/train_base2.py's step: draw and encode a batch,
forward, v loss, backward, AdamW; the loss here is unweighted and no captions are nulled, which changes no timing
that matters beside the UNet's forward and backward), for ways of running the same step faster on a CPU. It answers whether a kernel
or memory-layout change brings the base model's training under the hour issue 13 asks for, without a whole run.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.base_step_speed --threads 2

Variants (each in this process, one after the other, from the same seeded weights and batches):
  eager          the step as train_base2 runs it (torch SDPA, ComfyUI's attention with pytorch_attention=True)
  channels_last  the UNet and its input in channels-last memory
  bf16           CPU autocast to bfloat16 (changes the arithmetic, not only its speed)
  sdpa_math      SDPA forced to its math kernel instead of the CPU flash kernel
  compile        torch.compile (inductor; needs a C++ compiler), compile time reported apart
Prints one JSON line per variant: warm-up seconds and seconds per timed step.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time

import torch

from dice_core.refiner import append_dims
from toyworld.train_base import v_target

VARIANTS = ("eager", "channels_last", "bf16", "sdpa_math", "compile")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64, help="train_base2's shipped recipe uses 64")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    return p.parse_args(argv)


class StepRunner:
    """One variant's model, optimiser and batch stream, so that every variant starts from the same state."""

    def __init__(self, variant: str, batch: int):
        from toyworld import comfy_objects
        from toyworld.text_encoder import ToyTextEncoder
        from toyworld.train_base2 import World2Batches, _recipe

        recipe = _recipe()
        self.variant, self.batch = variant, batch
        self.data = World2Batches(ToyTextEncoder.load(recipe.text_encoder), argparse.Namespace(noise=0.15))
        model = comfy_objects.build_base_model(recipe.unet_config, prediction="v")
        self.unet = model.diffusion_model
        comfy_objects.init_unet_weights(self.unet, 0)
        self.model_sampling = model.model_sampling
        self.sigmas = self.model_sampling.sigmas.float().cpu()
        self.unet.train().requires_grad_(True)
        self.optimiser = torch.optim.AdamW(self.unet.parameters(), lr=1e-3, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(1)
        if variant == "channels_last":
            self.unet.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.unet) if variant == "compile" else self.unet

    def _kernel_context(self):
        if self.variant == "sdpa_math":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            return sdpa_kernel(SDPBackend.MATH)
        if self.variant == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> float:
        x0, context = self.data.batch(self.batch, self.generator)
        t = torch.randint(0, len(self.sigmas), (self.batch,), generator=self.generator)
        sigma = self.sigmas[t]
        noise = torch.randn(x0.shape, generator=self.generator)
        x_in = self.model_sampling.calculate_input(sigma, x0 + append_dims(sigma, x0.ndim) * noise)
        if self.variant == "channels_last":
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        with self._kernel_context():
            pred = self.forward(x_in, self.model_sampling.timestep(sigma).float(), context=context)
        loss = (pred.float() - v_target(x0, noise, sigma)).pow(2).mean()
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return loss.item()


def time_variant(variant: str, a) -> dict:
    torch.manual_seed(0)
    runner = StepRunner(variant, a.batch)
    started = time.perf_counter()
    for _ in range(a.warmup):
        runner.step()
    warm = time.perf_counter() - started
    started = time.perf_counter()
    losses = [runner.step() for _ in range(a.steps)]
    per_step = (time.perf_counter() - started) / max(1, a.steps)
    return {"variant": variant, "threads": a.threads, "batch": a.batch, "warmup_steps": a.warmup,
            "warmup_s": round(warm, 2), "timed_steps": a.steps, "s_per_step": round(per_step, 3),
            "losses_finite": all(math.isfinite(v) for v in losses)}


def main(argv=None) -> list[dict]:
    from dice_comfy.setup import setup_comfy

    a = parse_args(argv)
    setup_comfy(pytorch_attention=True)  # what train_base2 sets up
    torch.set_num_threads(a.threads)
    rows = []
    for variant in a.variants:
        rows.append(time_variant(variant, a))
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
