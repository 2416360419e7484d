"""Training-step cost of the node's loop against a minimal hand-written PyTorch loop, same maths, same model.

One process per measurement (clean peak memory). Prints one JSON line.
  python benchmarks/bench_training.py --mode node|reference --family sd15 --res 256 --batch 2 --steps 6
"""

from __future__ import annotations

import argparse
import json
import time

import common
import psutil
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["node", "reference"], required=True)
    ap.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="tiny test model instead of the full-size architecture")
    a = ap.parse_args()
    harness = common.setup(a.device)
    torch.manual_seed(0)
    import tiny_models

    from dice_core.fileformat import RefinerBundle
    from dice_core.refiner import Refiner, refine
    from dice_core.training import PromptBank, TrainConfig, distillation_loss, sample_batch, teacher_trajectories, train_refiner

    bridge = harness.pack_module("nodes.comfy_bridge")
    dim, pooled = (768, None) if a.family == "sd15" else (2048, 1280)
    patcher = (tiny_models.sd15() if a.family == "sd15" else tiny_models.sdxl()) if a.tiny else common.build_full(a.family)
    device = torch.device(a.device)
    prompts = [tiny_models.clip_conditioning(s, dim, tokens=a.tokens, pooled=pooled)[0] for s in range(4)]
    uc = tiny_models.clip_conditioning(99, dim, tokens=77, pooled=pooled)[0]
    cfg = TrainConfig.from_recipe("dice-pack", steps=a.warmup + a.steps, batch_size=a.batch, teacher_steps=2,
                                  samples_per_prompt=1, seed=0)
    denoiser = bridge.ComfyDenoiser(patcher, prompts, uc, device, None, None)
    info = bridge.family_for(patcher, a.tokens)
    bank = PromptBank(c=denoiser.student_bank(info), uc=uc[0])
    latent = (4, a.res // 8, a.res // 8)
    bundle = RefinerBundle(module=Refiner(dim).to(device), family=info.name, keep_rule=info.keep_rule)

    stamps: list[float] = []
    with bridge.trainable_view(patcher, a.grad_ckpt):
        data = teacher_trajectories(denoiser, len(prompts), latent, cfg)
        rss_before = psutil.Process().memory_info().rss / 2**20
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if a.mode == "node":
            t0 = time.perf_counter()
            stamps.append(t0)
            train_refiner(bundle, denoiser, bank, data, cfg, on_step=lambda s, v: stamps.append(time.perf_counter()))
        else:
            model = patcher.model
            ms = model.model_sampling
            dm = model.diffusion_model
            module = bundle.module.train().requires_grad_(True)
            opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            uc_dev = bank.uc.to(device)
            y = None
            if pooled:
                # SDXL's ADM vector built once, by ComfyUI, for the reference (it does not depend on c').
                y = model.encode_adm(pooled_output=torch.cat([p[1]["pooled_output"] for p in prompts]),
                                     width=a.res, height=a.res).to(device)
            stamps.append(time.perf_counter())
            for step in range(cfg.steps):
                x, sigma, idx, target = sample_batch(denoiser, data, cfg, step)
                x, sigma, target = x.to(device), sigma.to(device), target.to(device)
                c = refine(module, bank.c[idx].to(device), uc_dev, 1.0, info.keep_rule)
                s = sigma.view(-1, 1, 1, 1)
                eps = dm(x / (s**2 + 1).sqrt(), ms.timestep(sigma).float(), context=c,
                         **({"y": y[idx]} if y is not None else {}))
                pred = x - s * eps
                loss = distillation_loss(pred.float(), target.float(), sigma, cfg).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                float(loss)
                stamps.append(time.perf_counter())
    times = [b - a_ for a_, b in zip(stamps[:-1], stamps[1:])][a.warmup:]
    result = {
        "mode": a.mode, "family": a.family, "res": a.res, "batch": a.batch, "tokens": a.tokens, "grad_ckpt": a.grad_ckpt,
        "device": a.device, "s_per_step": sum(times) / len(times), "steps_timed": len(times),
        "peak_rss_mb": common.peak_rss_mb(), "rss_before_loop_mb": rss_before,
    }
    if device.type == "cuda":
        result["peak_vram_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
