"""Writes a tiny, seeded SD1.5 checkpoint that ComfyUI's CheckpointLoaderSimple detects as SD15.

ComfyUI's detection only looks at model_channels=320, context_dim=768, no linear projection and
no adm, so the UNet here has one level, one res block and one transformer block (18.7M
parameters). The text encoder is a full CLIP-L (123.7M parameters): ComfyUI builds it with
torch.empty, so every weight must be in the file (missing keys: "clip input is invalid: None";
some missing: NaN). The VAE is TAESD-shaped (2.45M parameters), which ComfyUI recognises from the
`taesd_decoder.*` keys. All values are seeded random numbers, written in fp16 (~288 MB).

The images it makes are noise; it exists so that the real loader, text encoder, KSampler and
VAE Decode run end to end in seconds on a CPU.

    python -m dice_testkit.make_tiny_checkpoint OUT.safetensors [--seed 0]

Needs ComfyUI importable (dice_testkit.harness.setup_comfy; main() calls it).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model.transformer."
VAE_PREFIX = "first_stage_model."
FORMAT_VERSION = "1"

# What comfy.model_detection reads back from the keys: 1 level, 1 res block, 1 transformer block.
UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [1],
    "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1], "transformer_depth_middle": 1,
    "num_heads": 8, "num_head_channels": -1, "context_dim": 768, "use_linear_in_transformer": False, "legacy": False,
    "adm_in_channels": None, "use_spatial_transformer": True, "use_temporal_attention": False,
    "use_temporal_resblock": False, "use_checkpoint": False,
}


def _shapes() -> dict[str, tuple[torch.Size, bool]]:
    """Checkpoint key -> (shape, is_parameter) for every tensor, built on the meta device (no memory, no init)."""
    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip
    import comfy.taesd.taesd
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with open(os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json")) as f:
        clip_config = json.load(f)

    out: dict[str, tuple[torch.Size, bool]] = {}
    with torch.device("meta"):
        unet = UNetModel(**UNET_CONFIG, operations=comfy.ops.disable_weight_init, device="meta")
        clip = comfy.clip_model.CLIPTextModel(clip_config, torch.float32, "meta", comfy.ops.disable_weight_init)
        taesd = comfy.taesd.taesd.TAESD()
    for prefix, module in ((UNET_PREFIX, unet), (CLIP_PREFIX, clip), (VAE_PREFIX, taesd)):
        params = {n for n, _ in module.named_parameters()}
        for name, t in module.state_dict().items():
            # SD1.5 files carry no text_projection (ComfyUI's saver drops it too; SD1.5 never uses the projected pool).
            if module is clip and not name.startswith("text_model."):
                continue
            out[prefix + name] = (t.shape, name in params)
    return out


def _value(key: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    leaf = key.rsplit(".", 1)[-1]
    if key.endswith("position_ids"):
        return torch.arange(shape[-1]).expand(shape).clone()
    if key == VAE_PREFIX + "vae_scale":
        return torch.ones(shape)
    if key == VAE_PREFIX + "vae_shift":
        return torch.zeros(shape)
    if len(shape) >= 2:
        fan_in = max(1, int(torch.Size(shape[1:]).numel()))
        return torch.randn(shape, generator=generator).mul_(fan_in**-0.5)
    if leaf == "weight":  # norm layers
        return torch.ones(shape)
    return torch.randn(shape, generator=generator).mul_(0.02)


def tiny_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, seeded: the same seed gives bit-identical values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (shape, _) in sorted(_shapes().items()):
        t = _value(key, shape, g)
        sd[key] = t if key.endswith("position_ids") else t.to(dtype)
    return sd


def write_tiny_checkpoint(path: str, seed: int = 0) -> str:
    """Write the checkpoint atomically to `path` (a .safetensors file) and return the path."""
    from safetensors.torch import save_file

    sd = tiny_state_dict(seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    save_file(sd, tmp, metadata={"dice_tiny_checkpoint": FORMAT_VERSION, "seed": str(seed), "format": "pt"})
    os.replace(tmp, path)
    return path


def ensure_tiny_checkpoint(path: str, seed: int = 0) -> str:
    """Write the checkpoint unless a complete one with the same seed is already at `path`."""
    if os.path.isfile(path):
        try:
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
            if meta.get("dice_tiny_checkpoint") == FORMAT_VERSION and meta.get("seed") == str(seed):
                return path
        except Exception:
            pass
    return write_tiny_checkpoint(path, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output .safetensors path (e.g. ComfyUI/models/checkpoints/dice_tiny_sd15.safetensors)")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    from dice_testkit import harness

    harness.setup_comfy()
    t0 = time.perf_counter()
    write_tiny_checkpoint(a.out, a.seed)
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
