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
    """--comfyui, else $COMFYUI_PATH, else the ComfyUI whose custom_nodes/ holds this pack, else .venv/ComfyUI."""
    if explicit or os.environ.get("COMFYUI_PATH"):
        path = os.path.abspath(os.path.expanduser(explicit or os.environ["COMFYUI_PATH"]))
        if not _is_comfyui(path):
            raise CliError(f"no ComfyUI at {path} (expected {os.path.join(path, 'comfy', 'model_management.py')})")
        return path
    for path in (os.path.dirname(os.path.dirname(REPO)), os.path.join(REPO, ".venv", "ComfyUI")):
        if _is_comfyui(path):
            return path
    raise CliError("ComfyUI not found: install this pack in ComfyUI/custom_nodes, or pass --comfyui PATH "
                   "(or set COMFYUI_PATH) to a ComfyUI folder")


def setup_comfy(comfyui: str | None = None, cpu: bool = False) -> None:
    """Put ComfyUI on sys.path and choose CPU mode before comfy.model_management is first imported.
    A no-op for the parts already done (inside a running ComfyUI or the test harness)."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    if "comfy.model_management" not in sys.modules:
        path = find_comfyui(comfyui)
        if path not in sys.path:
            sys.path.insert(0, path)
        if importlib.util.find_spec("torchvision") is None:
            # ComfyUI imports torchvision at start-up only for models DICE does not train (Cascade, Cosmos);
            # the project's import-only stand-in lets a source checkout run without it.
            stubs = os.path.join(REPO, "tests", "stubs")
            if os.path.isdir(os.path.join(stubs, "torchvision")) and stubs not in sys.path:
                sys.path.append(stubs)
        import torch
        from comfy.cli_args import args

        if cpu or not torch.cuda.is_available():
            args.cpu = True
        import comfy.model_management  # noqa: F401


def pack_module(name: str):
    """A module of this pack's nodes/ folder, e.g. pack_module("training_session")."""
    if ALIAS not in sys.modules:
        folder = os.path.join(REPO, "nodes")
        spec = importlib.util.spec_from_file_location(ALIAS, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        sys.modules[ALIAS] = importlib.util.module_from_spec(spec)  # a package without running its __init__
    return importlib.import_module(f"{ALIAS}.{name}")
