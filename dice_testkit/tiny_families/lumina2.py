"""Lumina Image 2.0: a tiny NextDiT (comfy.ldm.lumina.model) built from ComfyUI's own classes with seeded weights.
ComfyUI's Lumina 2 text encoder is Gemma-2 2B (comfy/text_encoders/lumina2.py): the tokenizer adds BOS (token 2), no end
token and no padding (min_length=1), the encoder returns the second-to-last hidden state (width 2304) of exactly those
tokens plus an all-ones attention_mask, and no pooled output."""
import torch

from dice_testkit import tiny_models

FAMILY = "Lumina2"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 2304
WIDTH, HEIGHT, FRAMES = 64, 64, None
NOTES = ("Gemma-2 2B 2304, no padding: T = 1 (BOS) + prompt tokens, so \"\" is (1, 1, 2304); extras: attention_mask "
         "(1, T) long all ones (the model gets num_tokens=T instead), pooled_output None. Prompts of different lengths never "
         "batch, so CFG costs two calls a step. CLIPTextEncodeLumina2 (and the official templates' prompt text) prepend a "
         "system prompt to both positive and negative")

_BOS = 0


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    """A ComfyUI ModelPatcher. Tiny by default; full_size=True gives what comfy/model_detection.py derives from
    lumina_2_model_bf16.safetensors (Lumina-Image-2.0): dim 2304, 26 layers, 24 heads / 8 kv heads, axes 32/32/32,
    ffn_dim_multiplier 4.0, 2 refiner layers each (class default)."""
    unet = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "cap_feat_dim": EMBED_DIM, "qk_norm": True,
            "rope_theta": 10000.0, "ffn_dim_multiplier": 4.0, "dtype": dtype}
    if full_size:
        unet.update({"dim": 2304, "n_layers": 26, "n_heads": 24, "n_kv_heads": 8, "axes_dims": [32, 32, 32],
                     "axes_lens": [300, 512, 512]})
    else:
        # head_dim 24 = sum(axes_dims); grouped-query attention kept (2 heads, 1 kv head) as in the real 24/8.
        unet.update({"dim": 48, "n_layers": 1, "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 1,
                     "axes_dims": [8, 8, 8], "axes_lens": [300, 512, 512], "multiple_of": 16})
    return tiny_models.seeded_model("Lumina2", unet, seed)


def prompt(words: tuple[int, ...]) -> list:
    """[c (1, 1 + len(words), 2304), {"pooled_output": None, "attention_mask": (1, T) long ones}] as CLIPTextEncode gives it:
    BOS then one row per word, nothing after (no end token, no padding)."""
    ids = [_BOS] + [1 + w for w in words]
    return tiny_models.llm_prompt(ids, EMBED_DIM)


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptySD3LatentImage, as ComfyUI's Lumina 2 workflows use it: (B, 16, H/8, W/8)."""
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    out = EmptySD3LatentImage.execute(width=WIDTH, height=HEIGHT, batch_size=batch)
    out = out.result if hasattr(out, "result") else out
    return out[0]["samples"]
