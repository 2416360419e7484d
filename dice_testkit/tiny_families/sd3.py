"""SD3/SD3.5: a tiny MMDiT (comfy.ldm.modules.diffusionmodules.mmdit, OpenAISignatureMMDITWrapper) built from
ComfyUI's own classes with seeded weights.
ComfyUI's SD3 text encoder (comfy/text_encoders/sd3_clip.py) emits CLIP-L (penultimate layer, 768) and CLIP-G
(penultimate, 1280), 77 tokens each, concatenated along features and zero-padded to 4096, then concatenated along
TOKENS with T5-XXL (4096, padded to at least 77 tokens, no attention mask): (1, 154, 4096) for any prompt up to
76 T5 tokens; pooled_output is CLIP-L pooled + CLIP-G pooled, (1, 2048)."""
from __future__ import annotations

import torch

from dice_testkit import tiny_models

FAMILY = "SD3"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 4096
WIDTH, HEIGHT, FRAMES = 64, 64, None
NOTES = ("CLIP-L+CLIP-G (77 tok, 768+1280 zero-padded to 4096) then T5-XXL padded to >=77 tok along tokens: "
         "(1,154,4096) for short prompts, '' too; pooled (1,2048); no attention_mask")

CLIP_TOKENS = 77
T5_MIN_LENGTH = 77  # T5XXLTokenizer(min_length=77), pad_to_max_length=False, pad token 0, no attention mask
START, END, PAD = 0, tiny_models.END, tiny_models.VOCAB_SIZE - 2  # word w -> id 1 + w (ids 1..9)


def _unet_config(dtype: torch.dtype = torch.float32, full_size: bool = False) -> dict:
    if full_size:
        # SD3.5 Large (sd3.5_large*.safetensors, the checkpoint of ComfyUI's sd3.5 templates), as
        # comfy/model_detection.py detects it: depth 38 (hidden 38*64=2432, 38 heads), RMS qk-norm, 192x192 pos_embed.
        depth, pos_max = 38, 192
    else:
        depth, pos_max = 1, 8  # hidden 64, 1 head (MMDiT fixes the head size at 64)
    hidden = 64 * depth
    unet = {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": depth, "input_size": None,
        "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": hidden}},
        "num_patches": pos_max * pos_max, "pos_embed_max_size": pos_max, "pos_embed_scaling_factor": None,
        "qk_norm": "rms", "x_block_self_attn_layers": [], "dtype": dtype,
    }
    if not full_size:
        unet["num_blocks"] = 2  # one full joint block + the final pre-only one
    return unet


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    from comfy.ldm.modules.diffusionmodules.mmdit import get_2d_sincos_pos_embed_torch

    unet = _unet_config(dtype, full_size)
    patcher = tiny_models.seeded_model("SD3", unet, seed)
    dm = patcher.model.diffusion_model
    with torch.no_grad():  # a buffer made with torch.empty: the fixed 2D sin-cos table real checkpoints carry
        pos_max = unet["pos_embed_max_size"]
        pe = get_2d_sincos_pos_embed_torch(dm.hidden_size, pos_max, pos_max, device=dm.pos_embed.device)
        dm.pos_embed.copy_(pe.reshape(dm.pos_embed.shape).to(dm.pos_embed.dtype))
    return patcher


def prompt(words: tuple[int, ...]) -> list:
    n = len(words)
    body = [1 + w for w in words]
    clip_l = tiny_models.context_tokens([START] + body + [END] * (CLIP_TOKENS - 1 - n), 768, 4242 + 768, causal=True, min_positions=CLIP_TOKENS)    # pads with end
    clip_g = tiny_models.context_tokens([START] + body + [END] + [PAD] * (CLIP_TOKENS - 2 - n), 1280, 4242 + 1280, causal=True, min_positions=CLIP_TOKENS)  # pad 0
    lg = torch.nn.functional.pad(torch.cat([clip_l, clip_g], dim=-1), (0, EMBED_DIM - 768 - 1280))
    t5_ids = body + [END]
    t5_ids += [PAD] * max(0, T5_MIN_LENGTH - len(t5_ids))
    t5 = tiny_models.context_tokens(t5_ids, EMBED_DIM, 4242 + 4096, causal=False, min_positions=CLIP_TOKENS)
    c = torch.cat([lg, t5], dim=0)[None]
    eos = n + 1  # CLIP's pooled output is read at the end token
    pooled = torch.cat([clip_l[eos], clip_g[eos]])[None]
    return [c, {"pooled_output": pooled}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    node = EmptySD3LatentImage
    fn = getattr(node, "execute", None) or node().generate
    return fn(width=WIDTH, height=HEIGHT, batch_size=batch)[0]["samples"]
