"""Is training correct in every precision a GPU offers? Not a speed figure: a correctness check.

For each precision (float32; float32 model with bf16 autocast; bf16 weights; fp16 weights, which
trains with loss scaling) the tiny SD1.5 and SDXL test models are trained by the node's own
run_training, then judged on held-out prompts and fresh noise as tests/test_training.py does on the
CPU. Also reports how far the student at alpha=0 is from the teacher's cond prediction: the two
must share numerics, or the refiner learns rounding noise.
Prints one JSON line per (family, precision).
  python -m benchmarks.gpu_precision --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks import common

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
    from dice_comfy import session
    from dice_core.training import TrainConfig
    from dice_testkit import tiny_models

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
    result = session.run_training(patcher, train_prompts, uc, cfg,
                                  session.SessionOptions(width=size, height=size, autocast_dtype=autocast))
    train_s = time.perf_counter() - t0
    judged = tiny_models.held_out_evaluation(patcher, result.bundle, held_out, uc, size, autocast)
    return {
        "family": family, "precision": precision, "device": a.device, "machine": common.machine(),
        "grad_scaling": judged.grad_scaling, "train_steps": a.steps, "train_s": train_s,
        "first_loss": result.losses[0], "last_loss": result.losses[-1],
        "held_out_unrefined": judged.unrefined, "held_out_refined": judged.refined,
        "held_out_ratio": judged.refined / judged.unrefined, "student_vs_teacher_rel_max_diff": judged.student_vs_teacher,
        "finite": bool(torch.isfinite(torch.tensor(result.losses)).all()),
    }


if __name__ == "__main__":
    main()
