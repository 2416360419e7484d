"""Is training correct in every precision a GPU offers? Not a speed figure: a correctness check.

For each precision (float32; float32 model with bf16 autocast; bf16 weights; fp16 weights, which
trains with loss scaling) the tiny SD1.5 and SDXL test models are trained by the node's own
run_training, then judged on held-out prompts and fresh noise as tests/test_training.py does on the
CPU. Also reports how far the student at alpha=0 is from the teacher's cond prediction: the two
must share numerics, or the refiner learns rounding noise.
Prints one JSON line per (family, precision).
  python benchmarks/gpu_precision.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import common
import torch

PRECISIONS = {  # name: (weight dtype, autocast dtype)
    "fp32": (torch.float32, None),
    "fp32+autocast-bf16": (torch.float32, torch.bfloat16),
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--families", nargs="+", default=["sd15", "sdxl"])
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    ap.add_argument("--steps", type=int, default=60)
    a = ap.parse_args()
    harness = common.setup(a.device)
    harness.load_pack()
    for family in a.families:
        for name in a.precisions:
            print(json.dumps(check(a, harness, family, name)), flush=True)


def check(a, harness, family: str, precision: str) -> dict:
    import tiny_models

    from dice_core.training import PromptBank, TrainConfig, evaluate_distillation, teacher_trajectories

    session = harness.pack_module("nodes.training_session")
    bridge = harness.pack_module("nodes.comfy_bridge")
    weight_dtype, autocast = PRECISIONS[precision]
    dim, pooled = (768, None) if family == "sd15" else (2048, 1280)
    build = tiny_models.sd15 if family == "sd15" else tiny_models.sdxl
    patcher = build(dtype=weight_dtype)
    train_words, held_out_words = tiny_models.vocab_split()
    train_prompts = [tiny_models.vocab_conditioning(w, dim, pooled=pooled)[0] for w in train_words]
    held_out = [tiny_models.vocab_conditioning(w, dim, pooled=pooled)[0] for w in held_out_words]
    uc = tiny_models.vocab_conditioning((), dim, pooled=pooled)[0]
    size = 64
    cfg = TrainConfig.from_recipe("dice-pack", steps=a.steps, batch_size=8, teacher_steps=8, samples_per_prompt=2, seed=0)
    t0 = time.perf_counter()
    result = session.run_training(patcher, train_prompts, uc, cfg, width=size, height=size, autocast_dtype=autocast)
    train_s = time.perf_counter() - t0
    bundle = result.bundle
    device = torch.device(a.device)
    bundle.module.to(device)
    denoiser = bridge.ComfyDenoiser(patcher, held_out, uc, device, bundle.pad_to, bundle.pad_token, autocast)
    info = bridge.family_for(patcher, held_out[0][0].shape[1])
    bank = PromptBank(c=denoiser.student_bank(info), uc=bundle.pad(uc[0]))
    eval_cfg = TrainConfig.from_recipe("dice-pack", teacher_steps=8, samples_per_prompt=2, seed=1234, batch_size=8)
    with torch.no_grad():
        patcher.pre_run()
        data = teacher_trajectories(denoiser, len(held_out), session._latent_shape(patcher, size, size), eval_cfg)
        unrefined = evaluate_distillation(bundle, denoiser, bank, data, eval_cfg, alpha=0.0)
        refined = evaluate_distillation(bundle, denoiser, bank, data, eval_cfg, alpha=1.0)
        j = torch.arange(min(8, len(data)))
        x, sigma, idx = data.x[j].to(device), data.sigma[j].to(device), data.idx[j]
        x0_c, _ = denoiser.teacher(x, sigma, idx)
        student = denoiser.student(x, sigma, idx, bank.c[idx].to(device))
        mismatch = float((student.float() - x0_c.float()).abs().max() / x0_c.float().abs().max())
        patcher.cleanup()
    bundle.module.to("cpu")
    return {
        "family": family, "precision": precision, "device": a.device, "machine": common.machine(),
        "grad_scaling": bool(denoiser.needs_grad_scaling), "train_steps": a.steps, "train_s": train_s,
        "first_loss": result.losses[0], "last_loss": result.losses[-1],
        "held_out_unrefined": unrefined, "held_out_refined": refined, "held_out_ratio": refined / unrefined,
        "student_vs_teacher_rel_max_diff": mismatch, "finite": bool(torch.isfinite(torch.tensor(result.losses)).all()),
    }


if __name__ == "__main__":
    main()
