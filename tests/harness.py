"""Puts a real ComfyUI on sys.path for the tests and tools (never a mock).

COMFYUI_PATH selects a checkout; the default is the ComfyUI 0.3.75 tree that scripts/setup_env.sh
extracts into .venv/ComfyUI.
"""

from __future__ import annotations

import asyncio
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUBS = os.path.join(REPO, "tests", "stubs")


def comfyui_path() -> str:
    path = os.environ.get("COMFYUI_PATH") or os.path.join(REPO, ".venv", "ComfyUI")
    if not os.path.isfile(os.path.join(path, "comfy", "model_management.py")):
        raise RuntimeError(f"no ComfyUI found at {path}: run `make setup` or set COMFYUI_PATH to a ComfyUI checkout")
    return path


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def setup_comfy(cpu: bool = True) -> str:
    """Idempotent: sys.path, CPU mode (unless cpu=False, for GPU benchmarks), and the import-only
    torchvision stand-in where needed. The mode is read when comfy.model_management is first imported."""
    path = comfyui_path()
    if path not in sys.path:
        sys.path.insert(0, path)
    if REPO not in sys.path:
        sys.path.insert(1, REPO)
    if not _has_torchvision() and STUBS not in sys.path:
        sys.path.append(STUBS)
    from comfy.cli_args import args

    if "comfy.model_management" not in sys.modules:
        args.cpu = cpu
    import comfy.model_management  # noqa: F401

    return path


_PACK_LOADED = False


def load_pack() -> dict:
    """Load this repo as a custom node pack exactly as ComfyUI's server does."""
    global _PACK_LOADED
    setup_comfy()
    import nodes

    if not _PACK_LOADED:
        ok = asyncio.run(nodes.load_custom_node(REPO))
        if not ok:
            raise RuntimeError("ComfyUI failed to load the pack; see the log above")
        _PACK_LOADED = True
    return nodes.NODE_CLASS_MAPPINGS


def pack_module(name: str):
    """A module of the loaded pack, e.g. pack_module("nodes.training_session")."""
    load_pack()
    suffix = "." + name
    for key, module in list(sys.modules.items()):
        if key.endswith(suffix) and os.path.dirname(getattr(module, "__file__", "") or "").startswith(REPO):
            return module
    raise KeyError(f"pack module {name} is not loaded")
