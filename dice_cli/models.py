"""The model to distil: a checkpoint file read by ComfyUI's own loader, or a named built-in model."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import CliError


@dataclass
class LoadedModel:
    patcher: Any  # comfy.model_patcher.ModelPatcher
    clip: Any  # comfy.sd.CLIP (or anything with tokenize / encode_from_tokens_scheduled)
    vae: Any  # comfy.sd.VAE (or anything with encode(IMAGE) -> latents); None if the checkpoint has none
    identity: str  # names this exact model: part of the latent cache key

    def short_id(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]


# name -> builder(argument after "name:") -> (MODEL patcher, CLIP, VAE). Used for --checkpoint NAME[:ARG].
BUILTIN: dict[str, Callable[[str], tuple]] = {}


def register(name: str, builder: Callable[[str], tuple]) -> None:
    BUILTIN[name] = builder


def _toyworld(arg: str) -> tuple:
    from toyworld.comfy_objects import load_toy_world

    return load_toy_world()


register("toyworld", _toyworld)


def _file_identity(path: str) -> str:
    st = os.stat(path)
    return f"file:{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


def load(spec: str) -> LoadedModel:
    name, _, arg = spec.partition(":")
    if name in BUILTIN and not os.path.isfile(spec):
        patcher, clip, vae = BUILTIN[name](arg)
        identity = f"builtin:{spec}"
        if name == "toyworld":
            from toyworld.comfy_objects import TEXT_ENCODER_PATH, UNET_PATH

            identity += "|" + "|".join(_file_identity(p) for p in (UNET_PATH, TEXT_ENCODER_PATH))
        return LoadedModel(patcher, clip, vae, identity)
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.isfile(path):
        raise CliError(f"checkpoint not found: {spec} (give a checkpoint file such as a .safetensors that ComfyUI's "
                       f"Load Checkpoint node reads, or one of: {', '.join(sorted(BUILTIN))})")
    from dice_comfy import internals, paths

    try:
        patcher, clip, vae = internals.load_checkpoint(path, embedding_directory=paths.embedding_folders())
    except RuntimeError as e:
        if "Could not detect model type" in str(e):
            raise CliError(
                f"{path}: ComfyUI did not recognise the model type of this checkpoint. dice_cli needs a full "
                "checkpoint (diffusion model, text encoder and VAE) that ComfyUI's Load Checkpoint node can load, "
                "such as SD1.5 or SDXL; a LoRA, VAE or text-encoder file is not one"
            ) from None
        raise CliError(f"{path}: ComfyUI could not load this checkpoint: {e}") from None
    except Exception as e:  # truncated or foreign files: safetensors / pickle errors
        raise CliError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if patcher is None:
        raise CliError(f"{path}: ComfyUI found no diffusion model in this checkpoint")
    if clip is None:
        raise CliError(f"{path} holds no text encoder: DICE needs the checkpoint's own text encoder to encode the prompts")
    return LoadedModel(patcher, clip, vae, _file_identity(path))
