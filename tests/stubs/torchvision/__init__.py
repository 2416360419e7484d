"""Import-only stand-in for torchvision, used by this project's test harness and demo only.

ComfyUI 0.3.75 imports torchvision at start-up for Stable Cascade, Cosmos and ACE, but SD1.5, SDXL
and PixArt never call it. PyPI's torchvision does not load beside the CPU torch used here, so the
harness puts this folder on PYTHONPATH. Anything that really calls torchvision fails loudly.
"""

from . import transforms  # noqa: F401

__version__ = "0.0.0-dice-stub"


def __getattr__(name):
    raise AttributeError(f"torchvision stand-in: {name} is not available in the DICE test harness")
