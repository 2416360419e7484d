"""Stable Cascade stage C: a tiny StageC prior (comfy.ldm.cascade.stage_c) built from ComfyUI's own classes with seeded
weights.
ComfyUI's Stable Cascade text encoder is CLIP-G (comfy/sdxl_clip.py StableCascadeClipG: last hidden layer, 1280): 77
tokens per 75-word chunk (start token, words, end token, end-token padding, with the padding masked in attention but
not zeroed), and pooled_output is the projected pooled vector, (1, 1280)."""
from __future__ import annotations

import torch

from dice_testkit import tiny_models

FAMILY = "Stable_Cascade_C"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 1280
WIDTH, HEIGHT = 256, 256  # StableCascade_EmptyLatentImage's minimum; compression 42 gives a 6x6 stage-C latent
FRAMES = None
NOTES = ("CLIP-G 1280, 77 tokens (start, words, end, end padding); pooled_output (1,1280) feeds clip_text_pooled; "
         "stage C also gets clip_img zeros (1,1,768) and sca/crp from extra_conds; 16-ch latent at 1/42 scale")

CLIP_TOKENS = 77
START, END = 0, tiny_models.END  # word w -> id 1 + w (ids 1..9); CLIP-G here pads with its end token


def _unet_config(dtype: torch.dtype = torch.float32, full_size: bool = False) -> dict:
    unet = {"stable_cascade_stage": "c", "dtype": dtype}
    if full_size:
        # Stage C full (stable_cascade_stage_c.safetensors), as comfy/model_detection.py detects it: clip_txt_mapper
        # 1280 -> 2048 gives c_cond 2048; everything else is StageC's default (c_hidden [2048, 2048], nhead [32, 32],
        # blocks [[8, 24], [24, 8]]).
        unet["c_cond"] = 2048
    else:
        # No down/up-sampling (switch_level False, as in the real model), one C-T-A triple per level.
        unet.update({"c_in": 16, "c_out": 16, "c_r": 64, "patch_size": 1, "c_cond": 32, "c_hidden": [32, 32],
                     "nhead": [2, 2], "blocks": [[1, 1], [1, 1]], "block_repeat": [[1, 1], [1, 1]],
                     "level_config": ["CTA", "CTA"], "c_clip_text": EMBED_DIM, "c_clip_text_pooled": 1280,
                     "c_clip_img": 768, "c_clip_seq": 4, "switch_level": [False]})
    return unet


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    return tiny_models.seeded_model("Stable_Cascade_C", _unet_config(dtype, full_size), seed)


def prompt(words: tuple[int, ...]) -> list:
    """CLIP is causal and the padding is masked: each real token carries the mean of the tokens up to it, each pad
    row the mean of all the real tokens (start, words, end)."""
    n = len(words)
    ids = [START] + [1 + w for w in words] + [END] * (CLIP_TOKENS - 1 - n)
    real = n + 2
    table, positions = tiny_models.token_tables(EMBED_DIM, CLIP_TOKENS, 4242 + EMBED_DIM)
    tok = table[torch.tensor(ids)]
    ctx = tok.cumsum(0) / torch.arange(1, CLIP_TOKENS + 1)[:, None]
    ctx[real:] = ctx[real - 1]
    c = tok + positions + 0.5 * ctx
    pooled = c[real - 1][None]  # the pooled output is read at the end token
    return [c[None], {"pooled_output": pooled}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    from comfy_extras.nodes_stable_cascade import StableCascade_EmptyLatentImage

    node = StableCascade_EmptyLatentImage
    fn = getattr(node, "execute", None) or node().generate
    return fn(width=WIDTH, height=HEIGHT, compression=42, batch_size=batch)[0]["samples"]
