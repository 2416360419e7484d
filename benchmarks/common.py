"""Shared pieces of the benchmark scripts: full-size architectures with random weights, timing, memory."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What model_detection derives from real SD1.5 and SDXL checkpoints.
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_resblock": False,
    "use_temporal_attention": False,
}
SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "num_heads": -1, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_resblock": False,
    "use_temporal_attention": False,
}


def setup(device: str = "cpu"):
    from dice_testkit import harness, standins

    # A lent card's Python has no test venv (and so no stand-ins .pth); the finder only serves what is missing.
    standins.install()

    harness.setup_comfy(cpu=device == "cpu")
    return harness


def build_full(family: str, dtype=torch.float32, seed: int = 0, device: str = "cpu"):
    """A full-size SD1.5 or SDXL UNet with seeded random weights, as a real ModelPatcher, built
    directly on `device` (a 2.6B-parameter SDXL UNet is initialised in seconds on a GPU)."""
    import comfy.supported_models

    from dice_testkit import tiny_models

    cfg = dict(SD15_UNET if family == "sd15" else SDXL_UNET, dtype=dtype)
    cls = comfy.supported_models.SD15 if family == "sd15" else comfy.supported_models.SDXL
    model = cls(cfg).get_model({}, device=torch.device(device))
    tiny_models.init_weights(model, seed)
    return tiny_models.as_patcher(model)


def write_json(result: dict, path: str | None) -> dict:
    """A study's --json output: the result written to path when one is given, and returned either way."""
    if path:  # atomic: a study that checkpoints here must not leave half a file when it is stopped mid-write
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        os.replace(path + ".tmp", path)
    return result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class Timer:
    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t


def run_child(module: str, args: list[str], timeout: int = 1800, threads: int | None = None) -> dict:
    """Run one measurement in a fresh process (clean peak-memory figures); its last JSON line."""
    return run_child_all(module, args, timeout, threads)[-1]


def run_child_all(module: str, args: list[str], timeout: int = 1800, threads: int | None = None) -> list[dict]:
    """Every JSON line a benchmark module (e.g. "bench_sampling") prints, run as `python -m benchmarks.<module>`
    from the repo root in a fresh process, on `threads` CPU threads (default: OMP_NUM_THREADS, else 2)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads) if threads else os.environ.get("OMP_NUM_THREADS", "2"))
    out = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{module} {args} failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
