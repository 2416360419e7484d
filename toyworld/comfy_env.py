"""Make ComfyUI importable for this package's command-line scripts (train_base, evaluate).

Inside a running ComfyUI (or the project's test harness) this is a no-op: ComfyUI is already
imported. Otherwise it puts ComfyUI on sys.path (COMFYUI_PATH, else <repo>/.venv/ComfyUI), adds the
project's import-only torchvision stand-in (tests/stubs) when torchvision is missing, and sets
`args.cpu` when there is no CUDA, before `comfy.model_management` is imported.
"""
from __future__ import annotations

import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def comfyui_path() -> str:
    return os.environ.get("COMFYUI_PATH") or os.path.join(REPO_ROOT, ".venv", "ComfyUI")


def setup_comfy(cpu: bool | None = None, pytorch_attention: bool = False) -> None:
    """cpu=None: CPU when torch has no CUDA. pytorch_attention: use torch SDPA in the UNet
    (faster than ComfyUI's CPU default, sub-quadratic attention; numerically equivalent)."""
    if "comfy.model_management" in sys.modules:
        return
    path = comfyui_path()
    if path not in sys.path:
        sys.path.insert(0, path)
    if importlib.util.find_spec("torchvision") is None:
        stubs = os.path.join(REPO_ROOT, "tests", "stubs")
        if os.path.isdir(os.path.join(stubs, "torchvision")) and stubs not in sys.path:
            sys.path.append(stubs)
    import torch
    from comfy.cli_args import args  # noqa: E402  (ComfyUI parses no argv when imported this way)
    if cpu is None:
        cpu = not torch.cuda.is_available()
    args.cpu = bool(cpu)
    if pytorch_attention:
        args.use_pytorch_cross_attention = True
