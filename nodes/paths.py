"""Registers models/dice with ComfyUI's folder_paths, restricted to .safetensors."""

from __future__ import annotations

import os

import folder_paths

FOLDER = "dice"


def register_dice_folder() -> str:
    path = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([path], {".safetensors"})
    else:
        paths, _ = folder_paths.folder_names_and_paths[FOLDER]
        folder_paths.folder_names_and_paths[FOLDER] = (paths, {".safetensors"})
    os.makedirs(folder_paths.folder_names_and_paths[FOLDER][0][0], exist_ok=True)
    return folder_paths.folder_names_and_paths[FOLDER][0][0]


def dice_folder() -> str:
    return register_dice_folder()


def prefixed_path(prefix: str) -> str:
    """models/dice/<prefix>, refusing prefixes that climb out of the folder; sub-folders are created."""
    base = os.path.join(dice_folder(), prefix)
    root = os.path.realpath(dice_folder())
    if not prefix or os.path.commonpath([root, os.path.realpath(base)]) != root:
        raise ValueError(f"filename prefix {prefix!r} points outside models/{FOLDER}")
    os.makedirs(os.path.dirname(base), exist_ok=True)
    return base


def next_free_path(prefix: str) -> str:
    """models/dice/<prefix>_00001.safetensors, counting up; the prefix may contain sub-folders."""
    base = prefixed_path(prefix)
    n = 1
    while os.path.exists(f"{base}_{n:05d}.safetensors"):
        n += 1
    return f"{base}_{n:05d}.safetensors"
