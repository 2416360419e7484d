"""Why the sampling ratio is what it is: one UNet call's cost against its batch size, on the card.

For each batch size, times a bare forward of the full-size UNet (no sampler, no ComfyUI wrappers)
two ways: the GPU's own time between CUDA events, and the host's wall time per call. DICE can save
at most 1 - t(b)/t(2b) of a sampling step; where the host time exceeds the GPU time, the step is
bound by kernel launches, not by arithmetic, and halving the rows saves little.
Prints one JSON line per (family, batch).
  python -m benchmarks.gpu_unet_probe --family sd15 --res 512 --batch 1 2 4 8 --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from benchmarks import common

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    a = ap.parse_args()
    common.setup(a.device)
    dtype = DTYPES[a.dtype]
    patcher = common.build_full(a.family, dtype=dtype, device=a.device)
    dm = patcher.model.diffusion_model
    dim = 768 if a.family == "sd15" else 2048
    cuda = a.device.startswith("cuda")
    for batch in a.batch:
        x = torch.randn(batch, 4, a.res // 8, a.res // 8, device=a.device, dtype=dtype)
        t = torch.full((batch,), 500.0, device=a.device)
        ctx = torch.randn(batch, 77, dim, device=a.device, dtype=dtype)
        extra = {"y": torch.randn(batch, 2816, device=a.device, dtype=dtype)} if a.family == "sdxl" else {}
        gpu_ms, wall_ms = [], []
        with torch.inference_mode():
            for i in range(a.repeats + 3):
                if cuda:
                    torch.cuda.synchronize()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                t0 = time.perf_counter()
                dm(x, t, context=ctx, **extra)
                if cuda:
                    end.record()
                    torch.cuda.synchronize()
                wall = (time.perf_counter() - t0) * 1000
                if i >= 3:
                    wall_ms.append(wall)
                    gpu_ms.append(start.elapsed_time(end) if cuda else wall)
        print(json.dumps({"family": a.family, "res": a.res, "batch": batch, "dtype": a.dtype, "device": a.device,
                          "gpu_ms": statistics.median(gpu_ms), "wall_ms": statistics.median(wall_ms),
                          "machine": common.machine()}), flush=True)


if __name__ == "__main__":
    main()
