"""Registers models/dice with ComfyUI's folder_paths, restricted to .safetensors."""

from __future__ import annotations

import os

import folder_paths

FOLDER = "dice"


def register_dice_folder() -> str:
    """Make sure ComfyUI knows the "dice" folder kind and return the folder saves go to.

    ComfyUI's convention for every model folder: ComfyUI/models/<kind> is always there, and paths from
    extra_model_paths.yaml are added to it. ComfyUI applies the yaml before it loads custom nodes, so a
    `dice:` entry there arrives first; models/dice is then put in front of it, where core puts its own
    default folders, and the extra paths stay for loading. Only .safetensors files are listed.
    """
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths = list(folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))[0])
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, {".safetensors"})
    os.makedirs(paths[0], exist_ok=True)
    return paths[0]


def prefixed_path(prefix: str) -> str:
    """models/dice/<prefix>, refusing prefixes that climb out of the folder; sub-folders are created."""
    base = os.path.join(register_dice_folder(), prefix)
    root = os.path.realpath(register_dice_folder())
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
