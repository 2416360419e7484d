"""Qwen-Image: a tiny QwenImageTransformer2DModel (comfy.ldm.qwen_image.model, MMDiT joint-attention blocks with
3-axis RoPE) built from ComfyUI's own classes with seeded weights.
ComfyUI's Qwen-Image text encoder (CLIPLoader type "qwen_image" -> comfy/text_encoders/qwen_image.py) runs
Qwen2.5-VL-7B (last layer, 3584 wide) on a chat template and keeps only what follows "<|im_start|>user\\n": the
words, then "<|im_end|>", "\\n", "<|im_start|>", "assistant", "\\n" (T = words + 5, "" gives 5), no padding; its
attention_mask is dropped when it has no masked element (always, for one prompt); pooled_output None."""
from __future__ import annotations

import torch

from dice_testkit import tiny_models

FAMILY = "QwenImage"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 3584
WIDTH, HEIGHT, FRAMES = 32, 32, None   # latent 16x1x4x4, 2x2 patches -> 4 image tokens
NOTES = ("Qwen2.5-VL-7B last layer, chat template cut after 'user\\n': words + 5 template tokens "
         "(<|im_end|> \\n <|im_start|> assistant \\n), no padding ('' -> (1,5,3584)), no attention_mask for one prompt, "
         "pooled None; latent is 5-D Wan21 (B,16,1,H/8,W/8): EmptySD3LatentImage's 4-D output gets unsqueeze(2)")

# Vocabulary: word w -> id 1 + w (ids 1..9); the template suffix tokens get their own ids.
IM_END, NL, IM_START, ASSISTANT = 10, 11, 12, 13
VOCAB = 14
SUFFIX = [IM_END, NL, IM_START, ASSISTANT, NL]


def _unet_config(full_size: bool, dtype) -> dict:
    if full_size:
        # Qwen-Image (qwen_image_bf16 / fp8_e4m3fn): comfy/model_detection.py reads in_channels 64 and 60
        # transformer_blocks; the class defaults give the rest (24 heads x 128, joint_attention_dim 3584, axes 16/56/56).
        return {"image_model": "qwen_image", "in_channels": 64, "num_layers": 60, "dtype": dtype}
    return {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "patch_size": 2, "num_layers": 1,
            "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": 3584,
            "axes_dims_rope": (8, 12, 12), "dtype": dtype}


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    import comfy.model_management
    device = comfy.model_management.get_torch_device() if full_size else None
    return tiny_models.seeded_model("QwenImage", _unet_config(full_size, dtype), seed, device=device)


def _encode(ids: list[int], dim: int, seed: int) -> torch.Tensor:
    """Vocabulary vectors plus positions plus a causal context term (each token carries the mean of the tokens
    up to it, as a decoder-only LLM's hidden states do), so the template suffix depends on the prompt."""
    table, positions = tiny_models.token_tables(dim, max(len(ids), 128), seed, vocab=VOCAB)
    tok = table[torch.tensor(ids)]
    ctx = tok.cumsum(0) / torch.arange(1, len(ids) + 1)[:, None]
    return tok + positions[: len(ids)] + 0.5 * ctx


def prompt(words: tuple[int, ...]) -> list:
    ids = [1 + w for w in words] + SUFFIX
    return [_encode(ids, EMBED_DIM, 4242 + EMBED_DIM)[None], {"pooled_output": None}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptySD3LatentImage, the node ComfyUI's Qwen-Image templates use, then what comfy.sample's
    fix_empty_latent_channels does before sampling for a 3-D latent format (Wan21): unsqueeze(2).
    (batch, 16, 1, HEIGHT/8, WIDTH/8); the model's process_img needs the 5-D form."""
    import comfy.latent_formats
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    fn = getattr(EmptySD3LatentImage, "execute", None) or EmptySD3LatentImage().generate
    latent = fn(width=WIDTH, height=HEIGHT, batch_size=batch)[0]["samples"]
    if comfy.latent_formats.Wan21.latent_dimensions == 3 and latent.ndim == 4:
        latent = latent.unsqueeze(2)
    return latent
