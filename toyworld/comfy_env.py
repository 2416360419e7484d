"""Make ComfyUI importable for this package's command-line scripts (train_base, evaluate).

Inside a running ComfyUI (or the project's test harness) this is a no-op: ComfyUI is already
imported. Otherwise ComfyUI comes from COMFYUI_PATH, the ComfyUI whose custom_nodes/ holds this
pack, or <repo>/.venv/ComfyUI; the work is done by dice_cli.comfy_setup, shared with the CLI.
"""

from __future__ import annotations


def setup_comfy(cpu: bool | None = None, pytorch_attention: bool = False) -> None:
    """cpu=None or False: the GPU when torch has CUDA. pytorch_attention: torch SDPA in the UNet."""
    from dice_cli.comfy_setup import setup_comfy as setup

    setup(cpu=bool(cpu), pytorch_attention=pytorch_attention)
