"""Wan 2.1 text-to-video: a tiny WanModel (comfy.ldm.wan.model) built from ComfyUI's own classes with seeded weights.
ComfyUI's Wan text encoder is umT5-XXL (width 4096, comfy/text_encoders/wan.py): its tokenizer pads every prompt with
the pad token 0 to min_length=512 (no start token; words, end token 1, pads), and the encoder masks the pads in its own
attention and zeroes their output rows (zero_out_masked); it returns no attention_mask and no pooled output."""
import torch

from dice_testkit import tiny_models

FAMILY = "WAN21_T2V"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 4096
WIDTH, HEIGHT, FRAMES = 32, 32, 5
TRAINING = {"batch_size": 2}  # the refiner on the real token count is most of the cost
NOTES = ("umT5-XXL 4096, padded to 512 tokens (words + end token, then pad rows that the encoder zeroes); "
         "extras: pooled_output None only (no attention_mask: the model cross-attends to all 512 rows). "
         "Latent (B, 16, 1+(F-1)//4, H/8, W/8) from EmptyHunyuanLatentVideo; ModelSamplingSD3 shift 8 by default")

MIN_LENGTH = 512  # comfy/text_encoders/wan.py UMT5XXlTokenizer(min_length=512, pad_token=0)
_END = tiny_models.END

# comfy/model_detection.py ("head.modulation" branch) for the two Wan 2.1 T2V checkpoints:
# wan2.1_t2v_1.3B (ComfyUI's text_to_video_wan template) and wan2.1_t2v_14B.
FULL_1_3B = {"dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30}
FULL_14B = {"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40}


def _unet_config(dtype: torch.dtype, full_size: bool, in_dim: int = 16, out_dim: int = 16) -> dict:
    unet = {
        "image_model": "wan2.1", "model_type": "t2v", "in_dim": in_dim, "out_dim": out_dim,
        "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
        "cross_attn_norm": True, "eps": 1e-6, "text_dim": EMBED_DIM, "dtype": dtype,
    }
    if full_size:
        unet.update(FULL_1_3B)
    else:
        # head_dim 16: the 3-D RoPE splits it 8/4/4 over t, h, w.
        unet.update({"dim": 32, "ffn_dim": 64, "num_heads": 2, "num_layers": 1})
    return unet


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    """A ComfyUI ModelPatcher. Tiny by default; full_size=True gives what comfy/model_detection.py reads from
    wan2.1_t2v_1.3B_fp16.safetensors (the checkpoint of ComfyUI's Wan 2.1 text-to-video template): dim 1536,
    30 blocks, 12 heads, ffn 8960 (FULL_14B holds the 14B values)."""
    return tiny_models.seeded_model("WAN21_T2V", _unet_config(dtype, full_size), seed)


def prompt(words: tuple[int, ...]) -> list:
    """[c (1, 512, 4096), {"pooled_output": None}] as CLIPTextEncode gives it with umT5-XXL: one row per word,
    the end token, then pad rows that are exactly zero. "" gives the end token's row and 511 zero rows."""
    ids = [1 + w for w in words] + [_END]
    length = max(MIN_LENGTH, len(ids))
    table, positions = tiny_models.token_tables(EMBED_DIM, length, 4242 + EMBED_DIM)
    c = torch.zeros(1, length, EMBED_DIM)
    c[0, : len(ids)] = table[ids] + positions[: len(ids)]
    return [c, {"pooled_output": None}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptyHunyuanLatentVideo (comfy_extras/nodes_hunyuan.py), which ComfyUI's Wan 2.1 text-to-video template
    uses: (B, 16, 1+(FRAMES-1)//4, HEIGHT/8, WIDTH/8)."""
    from comfy_extras.nodes_hunyuan import EmptyHunyuanLatentVideo

    out = EmptyHunyuanLatentVideo.execute(width=WIDTH, height=HEIGHT, length=FRAMES, batch_size=batch)
    out = out.result if hasattr(out, "result") else out
    return out[0]["samples"]
