"""Where the pack's files live in ComfyUI: models/dice (registered with folder_paths, .safetensors only), and
prompt files in ComfyUI's input folder."""

from __future__ import annotations

import logging
import os

import folder_paths

from dice_core.fileformat import RefinerBundle, load_refiner, save_refiner
from dice_core.training import prompt_lines

log = logging.getLogger("ComfyUI-DICE")

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


def refiner_files() -> list[str]:
    """The refiner files DICE Load Refiner offers. Listing changes nothing: the extension registers the folder
    once at start-up (register_dice_folder), and saving creates it."""
    if FOLDER not in folder_paths.folder_names_and_paths:
        return []
    return folder_paths.get_filename_list(FOLDER)


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


def load_refiner_file(name: str) -> RefinerBundle:
    """A refiner from models/dice by the name DICE Load Refiner lists."""
    path = folder_paths.get_full_path_or_raise(FOLDER, name)
    bundle = load_refiner(path)
    log.info("DICE: loaded %s from %s", bundle.describe(), path)
    return bundle


def save_refiner_file(bundle: RefinerBundle, prefix: str, include_optimizer: bool) -> str:
    """Save to the next free models/dice/<prefix>_NNNNN.safetensors; returns it as "models/dice/<name>"."""
    path = save_refiner(next_free_path(prefix), bundle, include_optimizer=include_optimizer)
    log.info("DICE: saved %s to %s", bundle.describe(), path)
    return f"models/{FOLDER}/{os.path.relpath(path, register_dice_folder())}"


def embedding_folders() -> list[str] | None:
    """ComfyUI's textual-inversion folders, for a checkpoint loaded outside the server (the CLI), as Load
    Checkpoint passes them; None where this ComfyUI has none configured."""
    try:
        return folder_paths.get_folder_paths("embeddings")
    except KeyError:
        return None


NO_PROMPTS_FILE = "(none)"


def prompt_files() -> list[str]:
    """The choices of the Train node's prompts_file: every .txt file in ComfyUI's input folder."""
    root = folder_paths.get_input_directory()
    found = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(".txt"):
                found.append(os.path.relpath(os.path.join(dirpath, f), root))
    return [NO_PROMPTS_FILE] + sorted(found)


def read_prompts(text: str, file_name: str) -> list[str]:
    """The Train node's prompts: its text box, then the chosen prompts file, one prompt per line."""
    lines = (text or "").splitlines()
    if file_name and file_name != NO_PROMPTS_FILE:
        path = os.path.join(folder_paths.get_input_directory(), file_name)
        if not os.path.isfile(path):
            raise ValueError(f"prompts file not found in ComfyUI's input folder: {file_name}")
        with open(path, encoding="utf-8") as f:
            lines += f.read().splitlines()
    return prompt_lines(lines)
