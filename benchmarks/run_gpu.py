"""The GPU benchmark suite, as one prepared run for a lent card (its time is scarce).

Runs each phase in its own process under one overall deadline, most important first, and appends
every JSON line the phases print to OUT/gpu_results.jsonl as it arrives, so a run cut short still
returns what it measured. Merge the file into benchmarks/results.json and BENCHMARKS.md with
  python -m benchmarks.run_all --merge-gpu OUT/gpu_results.jsonl
On the GPU machine:
  python -m benchmarks.run_gpu --out OUT --deadline-s 540
Smoke test of the same phases on the CPU with the tiny models:
  python -m benchmarks.run_gpu --out /tmp/gpu_smoke --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # each phase runs as `python -m benchmarks.<module>` from here


def phases(smoke: bool) -> list[tuple[str, str, list[str], int]]:
    """(name, benchmark module, arguments, time limit in seconds), in order of importance."""
    dev = ["--device", "cpu" if smoke else "cuda"]
    if smoke:
        tiny = ["--tiny", "--res", "64"]
        return [
            ("sampling_sd15", "bench_sampling", [*tiny, "--steps", "2", "--batch", "1", "2", "--repeats", "1", *dev], 120),
            ("training_sd15", "bench_training", [*tiny, "--mode", "node", "reference", "--batch", "1", "2",
                                                     "--grad-ckpt", "off", "on", "--steps", "2", "--warmup", "1", *dev], 120),
            ("precision", "gpu_precision", ["--steps", "4", "--precisions", "fp32", *dev], 120),
            ("sampling_sdxl", "bench_sampling", [*tiny, "--family", "sdxl", "--steps", "2", "--batch", "1",
                                                     "--repeats", "1", *dev], 120),
            ("training_sdxl", "bench_training", [*tiny, "--family", "sdxl", "--mode", "node", "reference", "--batch", "1",
                                                     "--grad-ckpt", "off", "--steps", "2", "--warmup", "1", *dev], 120),
            ("dynamic_vram", "gpu_dynamic_vram", ["--steps", "3", *dev], 120),
            ("families", "gpu_families", ["--tiny", "--families", "sd3", "wan21", "chroma", "--steps", "2", *dev], 300),
        ]
    # fp16 weights: what ComfyUI itself picks for SD1.5 and SDXL on this class of card.
    half = ["--dtype", "fp16"]
    return [
        # First, and cheap: on a ComfyUI 0.33 tree (COMFYUI_PATH), training follows dynamic VRAM's supported path.
        ("dynamic_vram", "gpu_dynamic_vram", dev, 90),
        ("sampling_sd15", "bench_sampling", ["--family", "sd15", "--res", "512", "--steps", "10", "--batch", "1", "4",
                                                "--repeats", "5", *half, *dev], 100),
        ("training_sd15", "bench_training", ["--family", "sd15", "--res", "512", "--mode", "reference", "node",
                                                "--batch", "1", "4", "16", "--grad-ckpt", "off", "on", "--steps", "6",
                                                "--warmup", "3", *half, *dev], 150),
        ("precision", "gpu_precision", dev, 90),
        ("sampling_sdxl", "bench_sampling", ["--family", "sdxl", "--res", "1024", "--steps", "10", "--batch", "1", "4",
                                                "--repeats", "5", *half, *dev], 120),
        ("training_sdxl", "bench_training", ["--family", "sdxl", "--res", "1024", "--mode", "reference", "node",
                                                "--batch", "1", "4", "16", "--grad-ckpt", "off", "on", "--steps", "3",
                                                "--warmup", "2", *half, *dev], 200),
        ("probe_sd15", "gpu_unet_probe", ["--family", "sd15", "--res", "512", "--batch", "1", "2", "4", "8", "16", "32",
                                             *half, *dev], 60),
        ("probe_sdxl", "gpu_unet_probe", ["--family", "sdxl", "--res", "1024", "--batch", "1", "2", "4", "8", "16",
                                             *half, *dev], 90),
        # Where the card is saturated: the batch sizes at which halving the rows halves the time.
        ("sampling_sd15_large", "bench_sampling", ["--family", "sd15", "--res", "512", "--steps", "10", "--batch", "16",
                                                      "--repeats", "3", *half, *dev], 90),
        ("sampling_sdxl_large", "bench_sampling", ["--family", "sdxl", "--res", "1024", "--steps", "10", "--batch", "8",
                                                      "--repeats", "3", *half, *dev], 120),
        # The newer families at full size (random weights), one process, each family in turn.
        ("families", "gpu_families", ["--families", "sd3", "auraflow", "chroma", "qwen_image", "lumina2", "zimage",
                                         "cosmos_predict2", "hunyuan_dit", "cascade_c", "hidream", "wan21", "wan22",
                                         "ltxv", "hunyuan_video15", "--dtype", "bf16", "--steps", "4", *dev], 400),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline-s", type=float, default=540)
    ap.add_argument("--smoke", action="store_true", help="the same phases on the CPU with tiny models")
    ap.add_argument("--only", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    results = os.path.join(a.out, "gpu_results.jsonl")
    start = time.monotonic()
    for name, module, args, limit in phases(a.smoke):
        if a.only and name not in a.only:
            continue
        left = a.deadline_s - (time.monotonic() - start)
        if left < 20:
            print(f"== {name}: skipped, {left:.0f} s left", flush=True)
            continue
        print(f"== {name} (limit {min(limit, left):.0f} s)", flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", f"benchmarks.{module}", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=REPO)
        try:
            _stream(proc, name, results, t0 + min(limit, left))
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                proc.kill()
                print(f"== {name}: stopped at its time limit", flush=True)
        print(f"== {name}: rc {proc.wait()} in {time.monotonic() - t0:.1f} s", flush=True)


def _stream(proc, phase: str, results: str, deadline: float) -> None:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, min(5.0, deadline - time.monotonic()))):
            if proc.poll() is not None:
                return
            continue
        line = proc.stdout.readline()
        if not line:
            return
        if line.startswith("{"):
            record = json.loads(line)
            record["phase"] = phase
            with open(results, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record)[:400], flush=True)
        elif "it/s]" not in line and "s/it]" not in line:
            print(f"  {line.rstrip()}"[:600], flush=True)


if __name__ == "__main__":
    main()
