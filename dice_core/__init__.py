"""DICE in pure torch: the refiner, its file format, and the training loop. No ComfyUI imports."""

from .families import FamilyInfo, UnsupportedFamilyError, family_info
from .fileformat import RefinerBundle, RefinerFileError, load_refiner, save_refiner
from .refiner import Refiner, count_parameters, keep_mask, refine

__all__ = [
    "FamilyInfo",
    "Refiner",
    "RefinerBundle",
    "RefinerFileError",
    "count_parameters",
    "family_info",
    "keep_mask",
    "load_refiner",
    "refine",
    "save_refiner",
    "UnsupportedFamilyError",
]
