"""Chroma: a tiny Chroma DiT (comfy.ldm.chroma.model.Chroma, Flux double/single-stream blocks with the
distilled_guidance_layer Approximator in place of Flux's modulation) built from ComfyUI's own classes with seeded weights.
ComfyUI encodes Chroma prompts with PixArt's T5-XXL path (CLIPLoader type "chroma" -> comfy/text_encoders/pixart_t5.py):
T5 last layer, 4096 wide, the words plus T5's end token and NO padding (min_length=1, pad_to_max_length=False),
no attention_mask, pooled_output None; "" gives (1, 1, 4096)."""
from __future__ import annotations

import dataclasses

import torch

from dice_testkit import tiny_models

FAMILY = "Chroma"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 4096
WIDTH, HEIGHT, FRAMES = 32, 32, None   # latent 16x4x4, 2x2 patches -> 4 image tokens
NOTES = ("T5-XXL via PixArt's tokenizer: words + end token, no padding (T = words+1, '' -> (1,1,4096)), "
         "no attention_mask, pooled None; the template's T5TokenizerOptions (min_padding/min_length, 0/0 there, "
         "'1 is the official way') can append pad tokens; cond/uncond of different lengths run as separate calls")

END, PAD = tiny_models.END, tiny_models.VOCAB_SIZE - 2  # word w -> id 1 + w (ids 1..9); T5 pad id 0 in reality


def _unet_config(full_size: bool, dtype) -> dict:
    import comfy.ldm.chroma.model

    if full_size:
        # Chroma1-HD / chroma-unlocked-v*: comfy/model_detection.py's Flux branch (hidden 3072, 24 heads, axes
        # 16/56/56, mlp 4, qkv_bias, patch 2, context 4096, 19 double + 38 single blocks) plus its Chroma overrides
        # (in/out channels 64, Approximator in_dim 64, out_dim 3072, hidden_dim 5120, n_layers 5).
        cfg = {"hidden_size": 3072, "num_heads": 24, "axes_dim": [16, 56, 56], "depth": 19, "depth_single_blocks": 38,
               "out_dim": 3072, "hidden_dim": 5120, "n_layers": 5}
    else:
        cfg = {"hidden_size": 64, "num_heads": 2, "axes_dim": [8, 12, 12], "depth": 1, "depth_single_blocks": 1,
               "out_dim": 64, "hidden_dim": 64, "n_layers": 1}
    cfg.update({"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 4096,
                "mlp_ratio": 4.0, "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64, "dtype": dtype})
    fields = {f.name for f in dataclasses.fields(comfy.ldm.chroma.model.ChromaParams)}
    if "txt_ids_dims" in fields:  # 0.33: detection adds these two (Flux branch: txt_ids_dims [], no vector_in)
        cfg["txt_ids_dims"] = []
    if "vec_in_dim" in fields:
        cfg["vec_in_dim"] = None
    return cfg


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    import comfy.model_management
    device = comfy.model_management.get_torch_device() if full_size else None
    return tiny_models.seeded_model("Chroma", _unet_config(full_size, dtype), seed, device=device)


def _encode(ids: list[int], dim: int, seed: int) -> torch.Tensor:
    """Vocabulary vectors plus positions plus a context term (T5 is bidirectional: every token carries the mean
    of the whole prompt), so the end token depends on the prompt."""
    table, positions = tiny_models.token_tables(dim, max(len(ids), 128), seed)
    tok = table[torch.tensor(ids)]
    return tok + positions[: len(ids)] + 0.5 * tok.mean(0, keepdim=True)


def prompt(words: tuple[int, ...]) -> list:
    ids = [1 + w for w in words] + [END]
    return [_encode(ids, EMBED_DIM, 4242 + 4096)[None], {"pooled_output": None}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptySD3LatentImage, the node ComfyUI's Chroma template uses: (batch, 16, HEIGHT/8, WIDTH/8)."""
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    fn = getattr(EmptySD3LatentImage, "execute", None) or EmptySD3LatentImage().generate
    return fn(width=WIDTH, height=HEIGHT, batch_size=batch)[0]["samples"]
