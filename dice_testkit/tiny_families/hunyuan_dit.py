"""HunyuanDiT 1.2: a tiny HunYuanDiT (comfy.ldm.hydit.models) built from ComfyUI's own classes with seeded weights.
ComfyUI's HunyuanDiT text encoder (comfy/text_encoders/hydit.py) runs two encoders: a Chinese-RoBERTa BERT (width 1024,
start 101 / end 102, padded with pad token 0 to min_length=77, rows not zeroed) gives the main tensor and an attention_mask,
and mT5-XL (width 2048, no start token, end token 1, padded with 0 to min_length=256) gives conditioning_mt5xl and
attention_mask_mt5xl; the model swaps every masked row of both for its learned text_embedding_padding."""
import torch

from dice_testkit import tiny_models

FAMILY = "HunyuanDiT"  # HunyuanDiT 1.2 checkpoints: extra_embedder in-dim 1024 (no size/style cond) -> image_model "hydit"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 1024
REAL_MT5_DIM = 2048  # mT5-XL width of conditioning_mt5xl in real workflows (and in build(full_size=True))
TINY_MT5_DIM = 64    # the tiny model's mT5 width: the real 2048 costs ~17 GFLOP per row (mlp_t5 2048->8192->1024
                     # over 256 tokens plus a 2048-wide attention pooler), over a second per call on one CPU thread
_mt5_dim = TINY_MT5_DIM  # what prompt() emits: set by the last build() call, so prompts always fit the model
WIDTH, HEIGHT, FRAMES = 64, 64, None
NOTES = ("BERT 1024 padded to 77 (start, words, end, then pad rows that are not zeroed) + attention_mask (1, 77); "
         "extras conditioning_mt5xl (1, 256, 2048) (words, end, pad; 64 wide in the tiny test model) + attention_mask_mt5xl (1, 256); "
         "pooled_output None. "
         "The model replaces every masked row (BERT and mT5) by learned padding, so edits to pad rows have no effect")

BERT_MIN_LENGTH = 77   # HyditBertTokenizer(min_length=77, pad_to_max_length=False, max_length=512)
MT5_MIN_LENGTH = 256   # MT5XLTokenizer(min_length=256, has_start_token=False)
_START, _END, _PAD = 0, tiny_models.END, tiny_models.VOCAB_SIZE - 2


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    """A ComfyUI ModelPatcher. Tiny by default; full_size=True gives what comfy/model_detection.py derives from
    hunyuan_dit_1.2.safetensors (DiT-g/2): hidden_size 1408, depth 40, mlp_ratio 4.3637, 16 heads (class default)."""
    global _mt5_dim
    _mt5_dim = REAL_MT5_DIM if full_size else TINY_MT5_DIM
    unet = {"image_model": "hydit", "input_size": 32, "patch_size": 2, "in_channels": 4, "learn_sigma": True,
            "text_states_dim": EMBED_DIM, "text_states_dim_t5": _mt5_dim, "text_len": BERT_MIN_LENGTH,
            "text_len_t5": MT5_MIN_LENGTH, "qk_norm": True, "size_cond": False, "use_style_cond": False, "dtype": dtype}
    if full_size:
        unet.update({"hidden_size": 1408, "depth": 40, "num_heads": 16, "mlp_ratio": 4.3637})
    else:
        # head_dim 24: the 2-D RoPE needs it divisible by 4. The BERT side keeps its real width 1024 (EMBED_DIM);
        # the mT5 side is TINY_MT5_DIM wide (see above), with the real 256-token layout and mask.
        unet.update({"hidden_size": 48, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0})
    return tiny_models.seeded_model("HunyuanDiT", unet, seed)


def _rows(ids: list, length: int, dim: int, pad_id: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(4242 + dim)
    table = torch.randn(tiny_models.VOCAB_SIZE, dim, generator=g)
    positions = 0.3 * torch.randn(length, dim, generator=g)
    full = ids + [pad_id] * (length - len(ids))
    return (table[full] + positions)[None]


def prompt(words: tuple[int, ...]) -> list:
    """[c (1, 77, 1024), {"pooled_output": None, "attention_mask": (1, 77), "conditioning_mt5xl": (1, 256, W),
    "attention_mask_mt5xl": (1, 256)}] as CLIPTextEncode gives it (masks are long, 1 on real tokens). W is the mT5 width
    of the last build(): 2048 (real) after build(full_size=True), TINY_MT5_DIM for the tiny model."""
    bert_ids = [_START] + [1 + w for w in words] + [_END]
    t5_ids = [1 + w for w in words] + [_END]
    bert_len = max(BERT_MIN_LENGTH, len(bert_ids))
    t5_len = max(MT5_MIN_LENGTH, len(t5_ids))
    c = _rows(bert_ids, bert_len, EMBED_DIM, _PAD)
    mt5 = _rows(t5_ids, t5_len, _mt5_dim, _PAD)
    mask = torch.zeros(1, bert_len, dtype=torch.long)
    mask[0, : len(bert_ids)] = 1
    mask_t5 = torch.zeros(1, t5_len, dtype=torch.long)
    mask_t5[0, : len(t5_ids)] = 1
    return [c, {"pooled_output": None, "attention_mask": mask, "conditioning_mt5xl": mt5, "attention_mask_mt5xl": mask_t5}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    """nodes.EmptyLatentImage (HunyuanDiT uses the 4-channel SDXL latent format): (B, 4, H/8, W/8)."""
    import nodes

    out = nodes.EmptyLatentImage().generate(WIDTH, HEIGHT, batch)
    out = out.result if hasattr(out, "result") else out
    return out[0]["samples"]
