"""Sampling cost: the same KSampler at cfg=w on (c, uc) against cfg=1.0 on DICE-refined c.

Prints one JSON line per batch size: wall time of each, model calls, and the refiner's own overhead.
  python -m benchmarks.bench_sampling --family sd15 --res 256 --steps 4 --batch 1
  python -m benchmarks.bench_sampling --family sdxl --res 1024 --steps 10 --batch 1 4 --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmarks import common


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, nargs="+", default=[1], help="one or more batch sizes, one model build")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args()
    harness = common.setup(a.device)
    from dice_core.fileformat import RefinerBundle
    from dice_core.refiner import Refiner
    from dice_testkit import tiny_models

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    dim, pooled = (768, None) if a.family == "sd15" else (2048, 1280)
    if a.tiny:
        patcher = tiny_models.sd15() if a.family == "sd15" else tiny_models.sdxl()
    else:
        patcher = common.build_full(a.family, dtype=dtype, device=a.device)
    refine_node = harness.load_pack()["DiceRefineConditioning"]
    torch.manual_seed(0)
    bundle = RefinerBundle(module=Refiner(dim), family=a.family.upper(), keep_rule="clip_chunk_start",
                           null_uc=torch.randn(1, 77, dim))
    pos = tiny_models.clip_conditioning(1, dim, pooled=pooled)
    neg = tiny_models.clip_conditioning(2, dim, pooled=pooled)
    for batch in a.batch:
        print(json.dumps(measure(a, patcher, refine_node, bundle, pos, neg, batch)), flush=True)


def measure(a, patcher, refine_node, bundle, pos, neg, batch: int) -> dict:
    import nodes
    from dice_testkit import tiny_models

    latent = {"samples": torch.zeros(batch, 4, a.res // 8, a.res // 8)}

    def sample(cfg, cond, counter=None):
        model = counter.attach(patcher) if counter else patcher
        return nodes.common_ksampler(model, 0, a.steps, cfg, "euler", "normal", cond, neg, latent)[0]["samples"]

    with torch.inference_mode():
        sample(a.cfg, pos)  # warm-up: loads weights, first-call allocations, kernel selection
        refined = refine_node.execute(pos, bundle, 1.0).args[0]
        sample(1.0, refined)
        cfg_t, dice_t, refine_t = [], [], []
        for _ in range(a.repeats):
            with common.Timer() as t:
                sample(a.cfg, pos)
            cfg_t.append(t.seconds)
            with common.Timer() as t:
                refined = refine_node.execute(pos, bundle, 1.0).args[0]
            refine_t.append(t.seconds)
            with common.Timer() as t:
                sample(1.0, refined)
            dice_t.append(t.seconds)
        calls = {}
        for name, cfg, cond in (("cfg", a.cfg, pos), ("dice", 1.0, refined)):
            counter = tiny_models.CallCounter()
            sample(cfg, cond, counter)
            calls[name] = {"calls": len(counter.batches), "rows": sum(counter.batches)}
    cfg_s, dice_s, ref_s = statistics.median(cfg_t), statistics.median(dice_t), statistics.median(refine_t)
    return {
        "family": a.family, "res": a.res, "steps": a.steps, "batch": batch, "device": a.device, "dtype": a.dtype,
        "machine": common.machine(), "cfg_scale": a.cfg, "cfg_s": cfg_s, "dice_sample_s": dice_s, "refine_s": ref_s,
        "dice_total_s": dice_s + ref_s, "ratio_dice_over_cfg": (dice_s + ref_s) / cfg_s,
        "refiner_overhead_fraction": ref_s / dice_s, "model_calls": calls, "repeats": a.repeats,
    }


if __name__ == "__main__":
    main()
