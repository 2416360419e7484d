"""Cosmos Predict2 text-to-image: a tiny MiniTrainDIT (comfy.ldm.cosmos.predict2) built from ComfyUI's own classes with seeded weights.
ComfyUI's Cosmos text encoder is the old T5-XXL (width 1024, comfy/text_encoders/cosmos.py): its tokenizer pads every prompt
with T5's pad token to min_length=512, and the encoder zeroes the padded rows (zero_out_masked) and returns an attention_mask."""
import torch

from dice_testkit import tiny_models

FAMILY = "CosmosT2IPredict2"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 1024
WIDTH, HEIGHT, FRAMES = 64, 64, None
NOTES = ("old T5-XXL 1024, padded to 512 tokens (words + end token, then pad rows that the encoder zeroes); "
         "extras: attention_mask (1, 512) long (1 = words + end), pooled_output None; the model ignores the mask. "
         "EmptySD3LatentImage gives a 4-D latent that the sampler unsqueezes to (B, 16, 1, H/8, W/8)")

MIN_LENGTH = 512  # comfy/text_encoders/cosmos.py T5XXLTokenizer(min_length=512)
_END = tiny_models.END


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    """A ComfyUI ModelPatcher. Tiny by default; full_size=True gives the 2B text-to-image config that
    comfy/model_detection.py derives from cosmos_predict2_2B_t2i (model_channels 2048, 28 blocks, 16 heads)."""
    unet = {
        "image_model": "cosmos_predict2", "max_img_h": 240, "max_img_w": 240, "max_frames": 128,
        "in_channels": 16, "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1,
        "concat_padding_mask": True, "crossattn_emb_channels": EMBED_DIM,
        "pos_emb_cls": "rope3d", "pos_emb_learnable": True, "pos_emb_interpolation": "crop",
        "min_fps": 1, "max_fps": 30, "use_adaln_lora": True,
        "extra_per_block_abs_pos_emb": False,
        "rope_h_extrapolation_ratio": 4.0, "rope_w_extrapolation_ratio": 4.0, "rope_t_extrapolation_ratio": 1.0,
        "extra_h_extrapolation_ratio": 1.0, "extra_w_extrapolation_ratio": 1.0, "extra_t_extrapolation_ratio": 1.0,
        "rope_enable_fps_modulation": False, "dtype": dtype,
    }
    if full_size:
        unet.update({"model_channels": 2048, "num_blocks": 28, "num_heads": 16, "adaln_lora_dim": 256})
    else:
        # head_dim 24: the 3-D RoPE splits it 8/8/8 over h, w, t.
        unet.update({"model_channels": 48, "num_blocks": 1, "num_heads": 2, "adaln_lora_dim": 16, "mlp_ratio": 2.0})
    return tiny_models.seeded_model("CosmosT2IPredict2", unet, seed)


def prompt(words: tuple[int, ...]) -> list:
    """[c (1, 512, 1024), {"pooled_output": None, "attention_mask": (1, 512) long}] as CLIPTextEncode gives it:
    one row per word, the end token, then pad rows that are exactly zero (T5 pad token 0, masked and zeroed)."""
    ids = [1 + w for w in words] + [_END]
    length = max(MIN_LENGTH, len(ids))
    table, positions = tiny_models.token_tables(EMBED_DIM, length, 4242 + EMBED_DIM)
    c = torch.zeros(1, length, EMBED_DIM)
    c[0, : len(ids)] = table[ids] + positions[: len(ids)]
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[0, : len(ids)] = 1
    return [c, {"pooled_output": None, "attention_mask": mask}]


def empty_latent(batch: int = 1) -> torch.Tensor:
    """EmptySD3LatentImage, as ComfyUI's Cosmos Predict2 text-to-image workflow uses it: (B, 16, H/8, W/8).
    comfy.sample.fix_empty_latent_channels turns it into (B, 16, 1, H/8, W/8) before the model sees it."""
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    out = EmptySD3LatentImage.execute(width=WIDTH, height=HEIGHT, batch_size=batch)
    out = out.result if hasattr(out, "result") else out
    return out[0]["samples"]
