"""Training data: prompts (data-free), or images with captions encoded once by the checkpoint's VAE.

Image sources: a folder of images, each with a same-name .txt caption (cat.png + cat.txt), or a
COCO-style captions JSON ({"images": [{id, file_name}], "annotations": [{image_id, caption}]}).
The latents are cached in the run folder, keyed by a hash of the image files and the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dice_core.training import prompt_lines, shard_range

from .distributed import Context
from .errors import CliError

log = logging.getLogger("dice_cli")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class Dataset:
    captions: list[str]
    images: list[str] | None = None  # unique image files; None: data-free (the teacher makes the latents)
    image_of: list[int] | None = None  # caption i describes images[image_of[i]]
    source: str = ""

    def describe(self) -> str:
        if self.images is None:
            return f"{len(self.captions)} prompts from {self.source} (data-free)"
        return f"{len(self.captions)} captions of {len(self.images)} images from {self.source}"


def _limit(items: list, limit: int) -> list:
    return items[:limit] if limit and limit > 0 else items


def read_prompts_file(path: str, limit: int = 0) -> Dataset:
    """One prompt per line; empty lines and lines starting with # are skipped (as in the node)."""
    if not os.path.isfile(path):
        raise CliError(f"prompts file not found: {path}")
    with open(path, encoding="utf-8") as f:
        prompts = prompt_lines(f)
    if not prompts:
        raise CliError(f"prompts file {path} has no prompts: write one prompt per line "
                       "(empty lines and lines starting with # are skipped)")
    return Dataset(captions=_limit(prompts, limit), source=path)


def _read_caption(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return " ".join(f.read().split())


def image_folder(folder: str, limit: int = 0) -> Dataset:
    """Images under folder (recursively, sorted by path), each with the caption in a same-name .txt file."""
    if not os.path.isdir(folder):
        raise CliError(f"image folder not found: {folder}")
    found = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise CliError(f"image folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    images, captions, uncaptioned = [], [], []
    for path in found:
        txt = os.path.splitext(path)[0] + ".txt"
        caption = _read_caption(txt) if os.path.isfile(txt) else ""
        if caption:
            images.append(path)
            captions.append(caption)
        else:
            uncaptioned.append(path)
    if not images:
        example = os.path.basename(found[0])
        raise CliError(
            f"image folder {folder} has {len(found)} images but no captions: put each image's caption in a .txt file "
            f"with the same name next to it ({example} -> {os.path.splitext(example)[0]}.txt)"
        )
    if uncaptioned:
        log.warning("skipping %d images without a caption file (or with an empty one), e.g. %s", len(uncaptioned),
                    uncaptioned[0])
    images, captions = _limit(images, limit), _limit(captions, limit)
    return Dataset(captions=captions, images=images, image_of=list(range(len(images))), source=folder)


def coco_captions(json_path: str, image_root: str | None = None, captions_per_image: int = 1, limit: int = 0) -> Dataset:
    """COCO captions: images in id order, each with its first captions_per_image captions (by annotation
    id; 0 takes all). Image files are looked up in image_root (default: the JSON's folder)."""
    if not os.path.isfile(json_path):
        raise CliError(f"captions JSON not found: {json_path}")
    try:
        with open(json_path, encoding="utf-8") as f:
            doc = json.load(f)
        files = {int(im["id"]): im["file_name"] for im in doc["images"]}
        notes = sorted(doc["annotations"], key=lambda a: (int(a["image_id"]), int(a.get("id", 0))))
        by_image: dict[int, list[str]] = {}
        for a in notes:
            text = " ".join(str(a["caption"]).split())
            if text:
                by_image.setdefault(int(a["image_id"]), []).append(text)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CliError(f"{json_path} is not a COCO-style captions file ({type(e).__name__}: {e}); expected "
                       '{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}') from None
    root = image_root or os.path.dirname(os.path.abspath(json_path))
    unknown = sorted(set(by_image) - set(files))
    if unknown:
        raise CliError(f"{json_path}: captions refer to image id {unknown[0]}, which is not in its 'images' list")
    ids = _limit([i for i in sorted(files) if i in by_image], limit)
    if not ids:
        raise CliError(f"{json_path} has no captions: its 'annotations' list is empty or has no caption text")
    images, captions, image_of = [], [], []
    for n, i in enumerate(ids):
        images.append(os.path.join(root, files[i]))
        chosen = by_image[i] if captions_per_image <= 0 else by_image[i][:captions_per_image]
        captions += chosen
        image_of += [n] * len(chosen)
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise CliError(f"{len(missing)} of the {len(images)} images of {json_path} are missing, e.g. {missing[0]}; "
                       "point --image-root at the folder holding them")
    return Dataset(captions=captions, images=images, image_of=image_of, source=json_path)


# ---- VAE encoding, once, cached --------------------------------------------------------------
def load_image(path: str, width: int, height: int) -> torch.Tensor:
    """A ComfyUI IMAGE row (H, W, 3) in [0, 1]: scaled to cover width x height, then centre-cropped."""
    import numpy as np
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            scale = max(width / im.width, height / im.height)
            size = (max(width, round(im.width * scale)), max(height, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.BICUBIC)
            left, top = (size[0] - width) // 2, (size[1] - height) // 2
            im = im.crop((left, top, left + width, top + height))
            return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    except OSError as e:
        raise CliError(f"cannot read image {path}: {e}") from None


def cache_key(images: list[str], model_identity: str, width: int, height: int) -> str:
    h = hashlib.sha256(f"{model_identity}|{width}x{height}|center-crop|bicubic".encode())
    for path in images:
        st = os.stat(path)
        h.update(f"\n{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _read_cache(path: str, count: int) -> torch.Tensor | None:
    from safetensors import safe_open

    if not os.path.isfile(path):
        return None
    try:
        with safe_open(path, framework="pt") as f:
            latents = f.get_tensor("latents")
    except Exception as e:  # a truncated cache is just recomputed
        log.warning("ignoring unreadable latent cache %s: %s", path, e)
        return None
    return latents if latents.shape[0] == count else None


def _write_cache(path: str, latents: torch.Tensor, meta: dict) -> None:
    from dice_core.fileformat import atomic_save_safetensors

    atomic_save_safetensors({"latents": latents.contiguous()}, path, {k: str(v) for k, v in meta.items()})


def encode_images(
    ctx: Context, vae, images: list[str], width: int, height: int, batch_size: int, cache_file: str,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Latents (N, C, h, w) of the images in order. Rank 0 reads the cache; otherwise each rank encodes
    its contiguous block, the blocks are gathered in rank order and rank 0 writes the cache."""
    read_by_main = {}  # rank 0's cached latents; the other ranks get them by broadcast

    def read_on_main():
        read_by_main["latents"] = _read_cache(cache_file, len(images))
        latents = read_by_main["latents"]
        return None if latents is None else (tuple(latents.shape), latents.dtype)

    cached = ctx.on_main(read_on_main)
    if cached is not None:
        log.info("latents of %d images read from the cache %s", len(images), cache_file)
        return ctx.broadcast_rows(read_by_main.get("latents"), *cached)
    if vae is None:
        raise CliError("this checkpoint has no VAE, so its images cannot be encoded: use a checkpoint with a VAE "
                       "or train data-free from --prompts")
    mine = shard_range(len(images), ctx.rank, ctx.world_size)
    out = []
    with torch.no_grad():
        for start in range(mine.start, mine.stop, batch_size):
            paths = images[start:min(start + batch_size, mine.stop)]
            pixels = torch.stack([load_image(p, width, height) for p in paths])
            out.append(vae.encode(pixels).float().cpu())
            if progress:
                progress(start + len(paths) - mine.start, len(mine))
    local = torch.cat(out) if out else torch.zeros(0)  # more ranks than images: an empty block
    latents = ctx.gather_rows(local) if ctx.enabled else local
    if ctx.is_main:
        _write_cache(cache_file, latents, {"images": len(images), "width": width, "height": height})
        log.info("encoded %d images with the VAE; latents %s cached in %s", len(images), tuple(latents.shape), cache_file)
    return latents
