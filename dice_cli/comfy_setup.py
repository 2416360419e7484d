"""Import ComfyUI headless (no server) and this pack's ComfyUI glue.

ComfyUI's own top-level module is called `nodes` (nodes.py), like this pack's folder nodes/, so the
pack's folder is imported under the alias `dice_nodes`, without running nodes/__init__.py (which
only registers the UI nodes with the server).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from .errors import CliError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALIAS = "dice_nodes"


def _is_comfyui(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "comfy", "model_management.py"))


def find_comfyui(explicit: str | None = None) -> str:
    """--comfyui, else $COMFYUI_PATH, else the ComfyUI whose custom_nodes/ holds this pack, else the one in the
    running venv (this repo's test venvs), else .venv/ComfyUI."""
    if explicit or os.environ.get("COMFYUI_PATH"):
        path = os.path.abspath(os.path.expanduser(explicit or os.environ["COMFYUI_PATH"]))
        if not _is_comfyui(path):
            raise CliError(f"no ComfyUI at {path} (expected {os.path.join(path, 'comfy', 'model_management.py')})")
        return path
    for path in (os.path.dirname(os.path.dirname(REPO)), os.path.join(sys.prefix, "ComfyUI"), os.path.join(REPO, ".venv", "ComfyUI")):
        if _is_comfyui(path):
            return path
    raise CliError("ComfyUI not found: install this pack in ComfyUI/custom_nodes, or pass --comfyui PATH "
                   "(or set COMFYUI_PATH) to a ComfyUI folder")


def setup_comfy(comfyui: str | None = None, cpu: bool = False, pytorch_attention: bool = False) -> None:
    """Put ComfyUI on sys.path and choose the device before comfy.model_management is first imported.
    The one place that does this for the CLI, the toy world's scripts, the tests and the benchmarks;
    a no-op for the parts already done (inside a running ComfyUI or after an earlier call).

    cpu=False: the GPU when torch has CUDA. pytorch_attention: torch SDPA in the UNet (faster than
    ComfyUI's CPU default, sub-quadratic attention; numerically equivalent)."""
    if REPO not in sys.path:
        sys.path.append(REPO)  # never ahead of ComfyUI: its nodes.py and this pack's nodes/ share a name
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


def pack_module(name: str):
    """A module of this pack's nodes/ folder, e.g. pack_module("training_session")."""
    if ALIAS not in sys.modules:
        folder = os.path.join(REPO, "nodes")
        spec = importlib.util.spec_from_file_location(ALIAS, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        sys.modules[ALIAS] = importlib.util.module_from_spec(spec)  # a package without running its __init__
    return importlib.import_module(f"{ALIAS}.{name}")
