"""A real ComfyUI for the tests and tools (never a mock), set up by dice_comfy.setup.

COMFYUI_PATH selects a checkout; the default is the ComfyUI tree that scripts/setup_env.sh put inside
the running interpreter's venv: .venv/ComfyUI (0.3.75) or .venv033/ComfyUI (0.33.0).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")


def comfyui_path() -> str:
    # Default: the ComfyUI that scripts/setup_env.sh put inside this interpreter's venv
    # (.venv/ComfyUI is 0.3.75, .venv033/ComfyUI is 0.33.0).
    path = os.environ.get("COMFYUI_PATH") or os.path.join(sys.prefix, "ComfyUI")
    if not os.path.isfile(os.path.join(path, "comfy", "model_management.py")):
        raise RuntimeError(f"no ComfyUI found at {path}: run `make setup` or set COMFYUI_PATH to a ComfyUI checkout")
    return path


def comfyui_version(path: str | None = None) -> str:
    """The version string of a ComfyUI tree (its comfyui_version.py), read without importing ComfyUI."""
    with open(os.path.join(path or comfyui_path(), "comfyui_version.py"), encoding="utf-8") as f:
        found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", f.read())
    return found.group(1) if found else "unknown"


def setup_comfy(cpu: bool = True) -> str:
    """Idempotent: sys.path and CPU mode (unless cpu=False, for GPU benchmarks), by the project's one setup
    routine (dice_comfy.setup). The torchvision/torchaudio stand-ins come with the test venv
    (dice_testkit/standins.py, installed by scripts/setup_env.sh)."""
    path = comfyui_path()
    from dice_comfy.setup import setup_comfy as setup

    setup(comfyui=path, cpu=cpu)
    return path


# The node ids the pack must register, written out as users see them: the tests compare the pack against this
# list, so it is deliberately not read from the pack.
DICE_NODES = frozenset({"DiceLoadRefiner", "DiceSaveRefiner", "DiceRefineConditioning", "DiceTrainRefiner",
                        "DiceToyWorldLoader", "DiceFastPathCheck"})
# Where users find them in the node library, written out the same way: training beside core's training nodes (core's
# TrainLoraNode is in `training`), the rest in the pack's folder under conditioning.
DICE_CATEGORIES = {"DiceTrainRefiner": "training", "DiceLoadRefiner": "conditioning/DICE",
                   "DiceSaveRefiner": "conditioning/DICE", "DiceRefineConditioning": "conditioning/DICE",
                   "DiceToyWorldLoader": "conditioning/DICE", "DiceFastPathCheck": "conditioning/DICE"}

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

