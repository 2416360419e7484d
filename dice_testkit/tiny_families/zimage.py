"""Z-Image (Turbo / base): a tiny Z-Image NextDiT (comfy.ldm.lumina.model, z_image_modulation) built from ComfyUI's own
classes with seeded weights. ComfyUI's Z-Image text encoder is Qwen3-4B (comfy/text_encoders/z_image.py): the prompt is
wrapped in the chat template "<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n" (3 + 5 template tokens, no
start/end token, no padding) and the encoder returns the second-to-last hidden state (width 2560) of every template and
prompt token plus an all-ones attention_mask, and no pooled output. The model itself pads the caption to a multiple of 32
with its learned cap_pad_token."""
import torch

from dice_testkit import tiny_models

FAMILY = "ZImage"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 2560
WIDTH, HEIGHT, FRAMES = 64, 64, None
NOTES = ("Qwen3-4B 2560, no padding: T = 8 chat-template tokens + prompt tokens, so \"\" is (1, 8, 2560); extras: "
         "attention_mask (1, T) long all ones (the model gets num_tokens=T), pooled_output None. The model pads the caption "
         "to a multiple of 32 with a learned token. Turbo is run at cfg 1 with a ConditioningZeroOut negative")

# Qwen2Tokenizer on the template gives [<|im_start|>, "user", "\n"] + prompt + [<|im_end|>, "\n", <|im_start|>, "assistant", "\n"]
_IM_START, _USER, _NL, _IM_END, _ASSISTANT = 10, 11, 12, 13, 14
_PREFIX = [_IM_START, _USER, _NL]
_SUFFIX = [_IM_END, _NL, _IM_START, _ASSISTANT, _NL]
_VOCAB = 16


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    """A ComfyUI ModelPatcher. Tiny by default; full_size=True gives what comfy/model_detection.py derives from
    z_image_turbo_bf16.safetensors: dim 3840, 30 layers, 30 heads (no GQA), axes 32/48/48, rope_theta 256,
    ffn_dim_multiplier 8/3, z_image_modulation, time_scale 1000, pad_tokens_multiple 32 (cap_pad_token present)."""
    unet = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "cap_feat_dim": EMBED_DIM, "qk_norm": True,
            "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
            "pad_tokens_multiple": 32, "dtype": dtype}
    if full_size:
        unet.update({"dim": 3840, "n_layers": 30, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48],
                     "axes_lens": [1536, 512, 512]})
    else:
        # dim 256 is the smallest the Z-Image modulation allows: its timestep embedder always emits 256 features and
        # each block's adaLN takes min(dim, 256). head_dim 64 = sum(axes_dims), axes in the real 2:3:3 ratio.
        unet.update({"dim": 256, "n_layers": 1, "n_refiner_layers": 1, "n_heads": 4, "n_kv_heads": 4,
                     "axes_dims": [16, 24, 24], "axes_lens": [1536, 512, 512], "multiple_of": 16})
    return tiny_models.seeded_model("ZImage", unet, seed)


def prompt(words: tuple[int, ...]) -> list:
    """[c (1, 8 + len(words), 2560), {"pooled_output": None, "attention_mask": (1, T) long ones}] as CLIPTextEncode gives
    it: chat-template prefix (3 rows), one row per word, template suffix (5 rows); no padding."""
    ids = _PREFIX + [1 + w for w in words] + _SUFFIX
    return tiny_models.llm_prompt(ids, EMBED_DIM, vocab=_VOCAB)


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptySD3LatentImage, as ComfyUI's Z-Image templates (image_z_image*.json) use it: (B, 16, H/8, W/8)."""
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    out = EmptySD3LatentImage.execute(width=WIDTH, height=HEIGHT, batch_size=batch)
    out = out.result if hasattr(out, "result") else out
    return out[0]["samples"]
