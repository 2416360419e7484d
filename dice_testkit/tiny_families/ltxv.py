"""LTXV: a tiny LTX-Video transformer (comfy.ldm.lightricks.model.LTXVModel) built from ComfyUI's own classes with seeded weights.
ComfyUI's LTXV text encoder is T5-XXL (width 4096, comfy/text_encoders/lt.py + genmo.py): the tokenizer pads with T5's pad
token to min_length=128, the encoder masks the pads in its own attention but does NOT zero their output rows, and it
returns an attention_mask that the LTXV model applies in cross-attention."""
import torch

from dice_testkit import tiny_models

FAMILY = "LTXV"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 4096
WIDTH, HEIGHT, FRAMES = 64, 64, 9
NOTES = ("T5-XXL 4096, padded to 128 tokens (words + end token, then 128-n-1 pad rows that are NOT zero: T5's outputs "
         "at the pad positions); extras: attention_mask (1, 128) long (1 = words + end), used by the model's "
         "cross-attention; pooled_output None. The official workflow adds frame_rate (LTXVConditioning, 25 = the "
         "model's default when absent). Latent (B, 128, 1+(F-1)//8, H/32, W/32)")

MIN_LENGTH = 128  # comfy/text_encoders/lt.py T5XXLTokenizer(min_length=128)
_END = tiny_models.END
_PAD = tiny_models.VOCAB_SIZE - 2


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    """A ComfyUI ModelPatcher. Tiny by default; full_size=True gives what comfy/model_detection.py reads from
    ltx-video-2b-v0.9*.safetensors (the checkpoint of ComfyUI's LTXV text-to-video template): 28 layers,
    attention_head_dim 64 (x 32 heads = 2048), cross_attention_dim 2048."""
    unet = {"image_model": "ltxv", "caption_channels": EMBED_DIM, "in_channels": 128, "dtype": dtype}
    if full_size:
        unet.update({"num_layers": 28, "attention_head_dim": 64, "num_attention_heads": 32, "cross_attention_dim": 2048})
    else:
        # cross_attention_dim must equal heads * head_dim: the caption projection maps 4096 -> inner_dim.
        unet.update({"num_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2, "cross_attention_dim": 32})
    return tiny_models.seeded_model("LTXV", unet, seed)


def prompt(words: tuple[int, ...]) -> list:
    """[c (1, max(128, n+1), 4096), {"pooled_output": None, "attention_mask": (1, T) long}] as CLIPTextEncode gives it."""
    ids = [1 + w for w in words] + [_END]
    n = len(ids)
    length = max(MIN_LENGTH, n)
    table, positions = tiny_models.token_tables(EMBED_DIM, length, 4242 + EMBED_DIM)
    c = table[ids] + positions[:n]
    # Pad rows: T5 output at pad-token positions; their queries attend to the real tokens, so they carry the prompt.
    pad = table[_PAD] + positions[n:length] + 0.5 * c.mean(dim=0, keepdim=True)
    c = torch.cat([c, pad])[None]
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[0, :n] = 1
    return [c, {"pooled_output": None, "attention_mask": mask}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptyLTXVLatentVideo (comfy_extras/nodes_lt.py): (B, 128, 1+(FRAMES-1)//8, HEIGHT/32, WIDTH/32)."""
    from comfy_extras.nodes_lt import EmptyLTXVLatentVideo

    out = EmptyLTXVLatentVideo.execute(width=WIDTH, height=HEIGHT, length=FRAMES, batch_size=batch)
    out = out.result if hasattr(out, "result") else out
    return out[0]["samples"]
