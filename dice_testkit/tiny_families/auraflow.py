"""AuraFlow: a tiny MMDiT (comfy.ldm.aura.mmdit.MMDiT, double + single blocks) built from ComfyUI's own classes with
seeded weights.
ComfyUI's AuraFlow text encoder is pile-T5-XL (width 2048, comfy/text_encoders/aura_t5.py): its tokenizer pads every
prompt with pad token 1 to min_length=256 (no truncation), the encoder masks the padding in attention and zeroes the
padded rows (zero_out_masked), and it returns no attention_mask and no pooled output."""
from __future__ import annotations

import torch

from dice_testkit import tiny_models

FAMILY = "AuraFlow"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 2048
WIDTH, HEIGHT, FRAMES = 64, 64, None
TRAINING = {"batch_size": 2}  # the refiner on the real token count is most of the cost
NOTES = ("pile-T5-XL 2048: words + end token, then rows of zeros up to 256 tokens (longer prompts grow past 256); "
         "pooled_output None, no attention_mask; 4-channel SDXL latent from EmptyLatentImage")

MIN_LENGTH = 256  # PT5XlTokenizer(min_length=256, pad_to_max_length=False, pad_token=1)
END, PAD = tiny_models.END, tiny_models.VOCAB_SIZE - 2  # word w -> id 1 + w (ids 1..9)


def _unet_config(dtype: torch.dtype = torch.float32, full_size: bool = False) -> dict:
    unet = {"in_channels": 4, "out_channels": 4, "patch_size": 2, "cond_seq_dim": EMBED_DIM, "dtype": dtype}
    if full_size:
        # AuraFlow v0.3 (aura_flow_0.3.safetensors) as comfy/model_detection.py reads it: max_seq 9216 (96x96 patches),
        # 4 double + 32 single layers; dim 3072, 12 heads, global_conddim 3072 are MMDiT's defaults (detection keeps them).
        unet.update({"max_seq": 9216, "n_double_layers": 4, "n_layers": 36})
    else:
        # 4x4 patches at 64x64 px; one double (MMDiT) and one single (DiT) block.
        unet.update({"max_seq": 16, "n_double_layers": 1, "n_layers": 2, "dim": 64, "n_heads": 2, "global_conddim": 64})
    return unet


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    return tiny_models.seeded_model("AuraFlow", _unet_config(dtype, full_size), seed)


def prompt(words: tuple[int, ...]) -> list:
    """T5 has no start token: words, end token, then pad tokens to 256. Attention sees only the words and the end
    token (bidirectional: each row also carries their mean); the pad rows come out as zeros."""
    ids = [1 + w for w in words] + [END]
    real = len(ids)
    ids += [PAD] * max(0, MIN_LENGTH - real)
    table, positions = tiny_models.token_tables(EMBED_DIM, max(len(ids), MIN_LENGTH), 4242 + EMBED_DIM)
    tok = table[torch.tensor(ids)] + positions[: len(ids)]
    tok = tok + 0.5 * table[torch.tensor(ids[:real])].mean(0, keepdim=True)
    tok[real:] = 0.0
    return [tok[None], {"pooled_output": None}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    import nodes

    return nodes.EmptyLatentImage().generate(WIDTH, HEIGHT, batch)[0]["samples"]
