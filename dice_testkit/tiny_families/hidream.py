"""HiDream-I1: a tiny HiDreamImageTransformer2DModel (comfy.ldm.hidream.model, dual/single-stream blocks with MoE
feed-forwards, per-block Llama-3 caption projections) built from ComfyUI's own classes with seeded weights.
ComfyUI's HiDream text encoder (QuadrupleCLIPLoader -> comfy/text_encoders/hidream.py) returns T5-XXL as the main
tensor, always exactly 128 tokens (words, end, pad id 0; min_length = max_length = 128, longer prompts cut), pooled
CLIP-L + CLIP-G (1, 768+1280), and conditioning_llama3: Llama-3.1-8B's 32 layer outputs (all hidden states minus
the embedding layer), start token + words padded with <|eot_id|> to at least 128 tokens, (1, 32, 128, 4096)."""
from __future__ import annotations

import torch

from dice_testkit import tiny_models

FAMILY = "HiDream"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 4096
WIDTH, HEIGHT, FRAMES = 32, 32, None   # latent 16x4x4, 2x2 patches -> 4 image tokens
TRAINING = {"batch_size": 2}  # the refiner on the real token count is most of the cost
NOTES = ("T5-XXL main tensor always (1,128,4096) (end + pad-0 to 128, cut at 128); pooled CLIP-L+G (1,2048); "
         "extra conditioning_llama3 (1,32,128,4096): 32 Llama-3.1 layers, start + words + <|eot_id|> pads to >=128 "
         "(64 MiB fp32 per prompt); equal lengths, so cond+uncond always batch")

T5_TOKENS = 128      # sd3_clip.T5XXLTokenizer(min_length=128, max_length=128); HiDreamTokenizer keeps chunk 0 only
LLAMA_MIN = 128      # hunyuan_video.LLAMA3Tokenizer(min_length=128, pad_token=128009), start token, no end token
LLAMA_LAYERS = 32    # LLAMAModel(layer="all") -> 33 hidden states; HiDreamTEModel drops the first ([:, 1:]).
# The tiny model reads only layers 0 and 1, so a test may set LLAMA_LAYERS = 2 to shrink conditioning_llama3
# 16x (ComfyUI copies it whole into every batch: 64 MiB fp32 per prompt at the real 32 layers).
CLIP_TOKENS = 77
START, END, PAD = 0, tiny_models.END, tiny_models.VOCAB_SIZE - 2  # word w -> id 1 + w (ids 1..9)


def _unet_config(full_size: bool, dtype) -> dict:
    if full_size:
        # HiDream-I1 (Full/Dev/Fast share it), exactly what comfy/model_detection.py returns for a checkpoint with
        # caption_projection.0.linear.weight: 20 heads x 128, 16 double + 32 single blocks, 4 routed / 2 active experts.
        return {"image_model": "hidream", "attention_head_dim": 128, "axes_dims_rope": [64, 32, 32],
                "caption_channels": [4096, 4096], "max_resolution": [128, 128], "in_channels": 16,
                "llama_layers": list(range(32)) + [31] * 16, "num_attention_heads": 20, "num_routed_experts": 4,
                "num_activated_experts": 2, "num_layers": 16, "num_single_layers": 32, "out_channels": 16,
                "patch_size": 2, "text_emb_dim": 2048, "dtype": dtype}
    # One double- and one single-stream block (inner 2 x 32 = 64); each block reads one Llama layer (0 and 1).
    return {"image_model": "hidream", "attention_head_dim": 32, "axes_dims_rope": [16, 8, 8],
            "caption_channels": [4096, 4096], "max_resolution": [128, 128], "in_channels": 16,
            "llama_layers": [0, 1], "num_attention_heads": 2, "num_routed_experts": 4, "num_activated_experts": 2,
            "num_layers": 1, "num_single_layers": 1, "out_channels": 16, "patch_size": 2, "text_emb_dim": 2048,
            "dtype": dtype}


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    import comfy.model_management
    device = comfy.model_management.get_torch_device() if full_size else None
    return tiny_models.seeded_model("HiDream", _unet_config(full_size, dtype), seed, device=device)


def prompt(words: tuple[int, ...]) -> list:
    n = len(words)
    body = [1 + w for w in words]
    t5_ids = (body + [END])[:T5_TOKENS]
    t5 = tiny_models.context_tokens(t5_ids + [PAD] * (T5_TOKENS - len(t5_ids)), EMBED_DIM, 4242 + 4096, causal=False, min_positions=T5_TOKENS)
    llama_ids = [START] + body
    llama_ids += [PAD] * max(0, LLAMA_MIN - len(llama_ids))
    llama = tiny_models.context_tokens(llama_ids, EMBED_DIM, 5353 + 4096, causal=True, min_positions=T5_TOKENS)
    # The real 32 layers differ; one shared vector per token keeps a prompt at 2 MiB until something copies it.
    llama3 = llama[None, None].expand(1, LLAMA_LAYERS, len(llama_ids), EMBED_DIM)
    eos = n + 1  # CLIP's pooled output is read at the end token
    clip_l = tiny_models.context_tokens([START] + body + [END] * (CLIP_TOKENS - 1 - n), 768, 4242 + 768, causal=True, min_positions=T5_TOKENS)
    clip_g = tiny_models.context_tokens([START] + body + [END] + [PAD] * (CLIP_TOKENS - 2 - n), 1280, 4242 + 1280, causal=True, min_positions=T5_TOKENS)
    pooled = torch.cat([clip_l[eos], clip_g[eos]])[None]
    return [t5[None], {"pooled_output": pooled, "conditioning_llama3": llama3}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptySD3LatentImage, the node ComfyUI's HiDream-I1 templates use: (batch, 16, HEIGHT/8, WIDTH/8)."""
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    fn = getattr(EmptySD3LatentImage, "execute", None) or EmptySD3LatentImage().generate
    return fn(width=WIDTH, height=HEIGHT, batch_size=batch)[0]["samples"]
