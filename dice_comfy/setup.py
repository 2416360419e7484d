"""Find ComfyUI and import it headless (no server): the one place that puts ComfyUI on sys.path.

Used by the command-line trainer, the toy world's scripts, the tests and the benchmarks. Inside a running
ComfyUI it has nothing to do: ComfyUI is already imported.
"""

from __future__ import annotations

import os
import sys

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ComfyUINotFoundError(RuntimeError):
    """No ComfyUI where one was looked for; the message says where it looked and what to pass."""


def _is_comfyui(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "comfy", "model_management.py"))


def find_comfyui(explicit: str | None = None) -> str:
    """explicit (--comfyui), else $COMFYUI_PATH, else the ComfyUI whose custom_nodes/ holds this pack, else the
    one in the running venv (this repo's test venvs), else .venv/ComfyUI."""
    if explicit or os.environ.get("COMFYUI_PATH"):
        path = os.path.abspath(os.path.expanduser(explicit or os.environ["COMFYUI_PATH"]))
        if not _is_comfyui(path):
            raise ComfyUINotFoundError(f"no ComfyUI at {path} (expected {os.path.join(path, 'comfy', 'model_management.py')})")
        return path
    for path in (os.path.dirname(os.path.dirname(PACK)), os.path.join(sys.prefix, "ComfyUI"), os.path.join(PACK, ".venv", "ComfyUI")):
        if _is_comfyui(path):
            return path
    raise ComfyUINotFoundError("ComfyUI not found: install this pack in ComfyUI/custom_nodes, or pass --comfyui PATH "
                               "(or set COMFYUI_PATH) to a ComfyUI folder")


def setup_comfy(comfyui: str | None = None, cpu: bool = False, pytorch_attention: bool = False) -> None:
    """Put ComfyUI first on sys.path and choose the device before comfy.model_management is first imported;
    a no-op once that module is imported (inside a running ComfyUI, or after an earlier call).

    ComfyUI goes first because its top-level `nodes` (nodes.py) shares a name with this pack's nodes/ folder.
    cpu=False: the GPU when torch has CUDA. pytorch_attention: torch SDPA in the UNet (faster than ComfyUI's
    CPU default, sub-quadratic attention; numerically equivalent)."""
    if "comfy.model_management" in sys.modules:
        return
    path = find_comfyui(comfyui)
    if path not in sys.path:
        sys.path.insert(0, path)
    import torch
    from comfy.cli_args import args  # ComfyUI parses no argv when imported this way

    args.cpu = bool(cpu) or not torch.cuda.is_available()
    if pytorch_attention:
        args.use_pytorch_cross_attention = True
    import comfy.model_management  # noqa: F401
