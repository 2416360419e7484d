"""HunyuanVideo 1.5: a tiny HunyuanVideo 1.5 DiT (comfy.ldm.hunyuan_video.model.HunyuanVideo, vision_in_dim set) built from
ComfyUI's own classes with seeded weights.
ComfyUI's encoder (comfy/text_encoders/hunyuan_image.py + qwen_image.py) runs Qwen2.5-VL-7B (hidden layer -3, width 3584)
over a chat template and keeps only the user text onwards: the prompt's tokens plus the 5 template tokens after it
("<|im_end|>", "\\n", "<|im_start|>", "assistant", "\\n"), with no padding, no pooled output, and the all-ones attention_mask
dropped; "" is encoded as " " (6 tokens). Quoted text in the prompt also goes through ByT5-small (width 1472) into
conditioning_byt5small."""
import torch

from dice_testkit import tiny_models

FAMILY = "HunyuanVideo15"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 3584
WIDTH, HEIGHT, FRAMES = 64, 64, 5
NOTES = ("Qwen2.5-VL 3584, no padding: T = prompt tokens + 5 template tokens (\"\" -> \" \" -> 6); pooled_output None; "
         "attention_mask dropped by the encoder (all ones); quoted text adds conditioning_byt5small (1, 13*quotes+1, 1472) "
         "- here word 8 is the quoted word '\"DICE\"' (4 Qwen tokens). Latent (B, 32, 1+(F-1)//4, H/16, W/16); the model "
         "concatenates 33 zero channels (image cond + mask) for text-to-video")

BYT5_DIM = 1472
QUOTED_WORD = 8  # word 8 stands for the quoted text "DICE": ' "', 'D', 'ICE', '"' in Qwen's tokenizer
_QUOTE_TEXT = 'Text "DICE". '  # what HunyuanImageTokenizer feeds ByT5 per quoted span
# Token rows of the fake vocabulary: words 0..8 -> 0..8 (word 8 uses 9..12 instead), then the special tokens.
_SPACE, _QUOTE_TOKENS, _SUFFIX = 13, (9, 10, 11, 12), (14, 15, 16, 17, 18)
_ROWS = 19


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    """A ComfyUI ModelPatcher. Tiny by default; full_size=True gives what comfy/model_detection.py reads from
    hunyuanvideo1.5_720p_t2v_fp16.safetensors (ComfyUI's HunyuanVideo 1.5 t2v template): hidden 2048 (16 heads of 128),
    54 double-stream blocks, no single blocks, patch [1, 1, 1], 65 input channels, byt5, cond-type embedding, vision_in 1152."""
    import dataclasses

    import comfy.ldm.hunyuan_video.model
    unet = {
        "image_model": "hunyuan_video", "in_channels": 65, "out_channels": 32, "patch_size": [1, 1, 1],
        "vec_in_dim": None, "context_in_dim": EMBED_DIM, "mlp_ratio": 4.0, "theta": 256, "qkv_bias": True,
        "guidance_embed": False, "byt5": True, "meanflow": False, "use_cond_type_embedding": True,
        "vision_in_dim": 1152, "depth_single_blocks": 0, "dtype": dtype,
    }
    if full_size:
        unet.update({"hidden_size": 2048, "num_heads": 16, "depth": 54, "axes_dim": [16, 56, 56]})
    else:
        unet.update({"hidden_size": 64, "num_heads": 2, "depth": 1, "axes_dim": [8, 12, 12], "mlp_ratio": 2.0})
    # 0.33's detection adds meanflow_sum (True whenever vision_in exists); 0.3.75's params dataclass has no such field.
    if "meanflow_sum" in {f.name for f in dataclasses.fields(comfy.ldm.hunyuan_video.model.HunyuanVideoParams)}:
        unet["meanflow_sum"] = True
    return tiny_models.seeded_model("HunyuanVideo15", unet, seed)


def _token_ids(words: tuple[int, ...]) -> list[int]:
    ids = []
    for w in words:
        ids.extend(_QUOTE_TOKENS if w == QUOTED_WORD else (w,))
    return (ids or [_SPACE]) + list(_SUFFIX)


def prompt(words: tuple[int, ...]) -> list:
    """[c (1, n_tokens + 5, 3584), {"pooled_output": None[, "conditioning_byt5small": (1, 13*k+1, 1472)]}]."""
    g = torch.Generator().manual_seed(4242 + EMBED_DIM)
    table = torch.randn(_ROWS, EMBED_DIM, generator=g)
    positions = 0.3 * torch.randn(128, EMBED_DIM, generator=g)
    ids = _token_ids(words)
    e = table[ids]
    # A causal LLM: each hidden state also carries what came before it (the template suffix sums up the prompt).
    context = e.cumsum(0) / torch.arange(1, len(ids) + 1).unsqueeze(1)
    c = (e + positions[: len(ids)] + 0.5 * context)[None]
    extras = {"pooled_output": None}
    quotes = sum(1 for w in words if w == QUOTED_WORD)
    if quotes:
        byte_ids = list(_QUOTE_TEXT.encode()) * quotes
        gb = torch.Generator().manual_seed(4242 + BYT5_DIM)
        byte_table = torch.randn(256 + 1, BYT5_DIM, generator=gb)
        byte_pos = 0.3 * torch.randn(len(byte_ids) + 1, BYT5_DIM, generator=gb)
        extras["conditioning_byt5small"] = (byte_table[byte_ids + [256]] + byte_pos)[None]  # bytes + end token
    return [c, extras]


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptyHunyuanVideo15Latent (comfy_extras/nodes_hunyuan.py): (B, 32, 1+(FRAMES-1)//4, HEIGHT/16, WIDTH/16)."""
    from comfy_extras.nodes_hunyuan import EmptyHunyuanVideo15Latent

    out = EmptyHunyuanVideo15Latent.execute(width=WIDTH, height=HEIGHT, length=FRAMES, batch_size=batch)
    out = out.result if hasattr(out, "result") else out
    return out[0]["samples"]
