"""Training-step cost of the node's loop against a minimal hand-written PyTorch loop, same maths, same model.

Prints one JSON line per (mode, batch, gradient checkpointing) configuration.
On the CPU, run one configuration per process: peak RSS cannot be reset inside a process.
On a GPU, many configurations share one model build; peak VRAM is reset before each.
  python -m benchmarks.bench_training --mode node --family sd15 --res 256 --batch 2 --steps 6
  python -m benchmarks.bench_training --mode node reference --family sdxl --res 1024 --batch 1 4 16 \\
      --grad-ckpt off on --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from typing import NamedTuple

import psutil
import torch

from benchmarks import common

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", nargs="+", choices=["node", "reference"], required=True)
    ap.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--batch", type=int, nargs="+", default=[2])
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="the frozen model's weight dtype")
    ap.add_argument("--autocast", default="none", choices=["none", *DTYPES],
                    help="compute precision for a float32 model on CUDA (as the node's autocast input)")
    ap.add_argument("--grad-ckpt", nargs="+", choices=["off", "on"], default=["off"])
    ap.add_argument("--tiny", action="store_true", help="tiny test model instead of the full-size architecture")
    a = ap.parse_args()
    common.setup(a.device)
    torch.manual_seed(0)
    from dice_testkit import tiny_models

    if a.tiny:
        patcher = tiny_models.sd15() if a.family == "sd15" else tiny_models.sdxl()
    else:
        patcher = common.build_full(a.family, dtype=DTYPES[a.dtype], device=a.device)
    weights_mb = sum(p.numel() * p.element_size() for p in patcher.model.parameters()) / 2**20
    for batch in a.batch:
        for ckpt in a.grad_ckpt:
            for mode in a.mode:
                oom = None
                try:
                    result = measure(a, patcher, mode, batch, ckpt == "on")
                except torch.OutOfMemoryError as e:
                    oom = str(e).splitlines()[0]
                if oom is not None:
                    # Outside the except block, so the traceback's activations are already released.
                    gc.collect()
                    torch.cuda.empty_cache()
                    result = {"mode": mode, "family": a.family, "res": a.res, "batch": batch, "grad_ckpt": ckpt == "on",
                              "oom": True, "error": oom}
                result.update(device=a.device, dtype=a.dtype, autocast=a.autocast, model_weights_mb=weights_mb,
                              machine=common.machine())
                print(json.dumps(result), flush=True)


def measure(a, patcher, mode: str, batch: int, grad_ckpt: bool) -> dict:
    from dice_comfy import bridge
    from dice_core.fileformat import RefinerBundle
    from dice_core.refiner import Refiner
    from dice_core.training import PromptBank, TrainConfig, TrainingEvents, teacher_trajectories, train_refiner
    from dice_testkit import tiny_models

    torch.manual_seed(0)
    dim, pooled = (768, None) if a.family == "sd15" else (2048, 1280)
    device = torch.device(a.device)
    prompts = [tiny_models.clip_conditioning(s, dim, tokens=a.tokens, pooled=pooled)[0] for s in range(4)]
    uc = tiny_models.clip_conditioning(99, dim, tokens=77, pooled=pooled)[0]
    cfg = TrainConfig.from_recipe("dice-pack", steps=a.warmup + a.steps, batch_size=batch, teacher_steps=2,
                                  samples_per_prompt=1, seed=0)
    autocast = None if a.autocast == "none" else DTYPES[a.autocast]
    denoiser = bridge.ComfyDenoiser(patcher, prompts, uc, device, None, None, autocast)
    info = bridge.family_for(patcher)
    bank = PromptBank(c=denoiser.student_bank(), uc=uc[0])
    latent = (4, a.res // 8, a.res // 8)
    bundle = RefinerBundle(module=Refiner(dim).to(device), family=info.name, keep_rule=info.keep_rule)

    stamps: list[float] = []

    def stamp(*_):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    with bridge.trainable_view(patcher, grad_ckpt):
        data = teacher_trajectories(denoiser, len(prompts), latent, cfg)
        rss_before = psutil.Process().memory_info().rss / 2**20
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            vram_before = torch.cuda.memory_allocated() / 2**20
        if mode == "node":
            stamp()
            train_refiner(bundle, denoiser, bank, data, cfg, TrainingEvents(on_step=stamp))
        else:
            reference_loop(a, patcher, ReferenceInputs(bundle, bank, data, cfg, denoiser, prompts), stamp)
    times = [b - a_ for a_, b in zip(stamps[:-1], stamps[1:])][a.warmup:]
    result = {
        "mode": mode, "family": a.family, "res": a.res, "batch": batch, "tokens": a.tokens, "grad_ckpt": grad_ckpt,
        "s_per_step": sum(times) / len(times), "steps_timed": len(times),
        "peak_rss_mb": common.peak_rss_mb(), "rss_before_loop_mb": rss_before,
        "grad_scaling": bool(denoiser.needs_grad_scaling),
    }
    if device.type == "cuda":
        result["peak_vram_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["vram_before_loop_mb"] = vram_before
    return result


class ReferenceInputs(NamedTuple):
    """What the node's loop was given, for the hand-written loop to train on the same data."""

    bundle: object  # RefinerBundle
    bank: object  # PromptBank
    data: object  # TrainingData
    cfg: object  # TrainConfig
    denoiser: object  # ComfyDenoiser: its sampling of the data and its precision
    prompts: list  # CONDITIONING entries: SDXL's pooled output


def reference_loop(a, patcher, inputs: ReferenceInputs, stamp) -> None:
    """The same maths written directly against the UNet: no calc_cond_batch, no ComfyUI wrappers."""
    from dice_core.refiner import append_dims, refine
    from dice_core.training import distillation_loss, sample_batch

    bundle, bank, data, cfg, denoiser, prompts = inputs

    device = torch.device(a.device)
    model = patcher.model
    ms = model.model_sampling
    dm = model.diffusion_model
    module = bundle.module.train().requires_grad_(True)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if denoiser.needs_grad_scaling else None
    precision = (torch.autocast("cuda", dtype=denoiser.autocast_dtype) if denoiser.autocast_dtype
                 else contextlib.nullcontext())
    dtype = model.get_dtype()
    uc_dev = bank.uc.to(device)
    bank_c = bank.c.to(device)
    y = None
    if model.adm_channels:
        # SDXL's ADM vector built once, by ComfyUI, for the reference (it does not depend on c').
        y = model.encode_adm(pooled_output=torch.cat([p[1]["pooled_output"] for p in prompts]),
                             width=a.res, height=a.res).to(device, dtype)
    stamp()
    for step in range(cfg.steps):
        x, sigma, idx, target, _, _ = sample_batch(denoiser, data, cfg, step)
        x, sigma, target = x.to(device), sigma.to(device), target.to(device)
        c = refine(module, bank_c[idx.to(device)], uc_dev, 1.0, bundle.keep_rule)
        s = append_dims(sigma, x.ndim)
        with precision:
            eps = dm((x / (s**2 + 1).sqrt()).to(dtype), ms.timestep(sigma).float(), context=c.to(dtype),
                     **({"y": y[idx.to(device)]} if y is not None else {}))
        pred = x - s * eps.float()
        loss = distillation_loss(pred.float(), target.float(), sigma, cfg).mean()
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        float(loss.detach())
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        stamp()


if __name__ == "__main__":
    main()
