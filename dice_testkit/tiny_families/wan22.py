"""Wan 2.2 TI2V 5B (text-to-video use): a tiny WanModel (comfy.ldm.wan.model) with 48-channel in/out, built from
ComfyUI's own classes (WAN22_T2V -> model_base.WAN22) with seeded weights.
Its text encoder is the same umT5-XXL as Wan 2.1 (width 4096, comfy/text_encoders/wan.py): every prompt is padded with
pad token 0 to min_length=512 and the pad rows are zeroed (zero_out_masked); no attention_mask, no pooled output.
The Wan 2.2 A14B high/low-noise T2V checkpoints have 16-channel in/out and detect as WAN21_T2V (see wan21.py)."""
import torch

from dice_testkit import tiny_models
from dice_testkit.tiny_families import wan21

FAMILY = "WAN22_T2V"
RUNTIMES = ("0.3.75", "0.33.0")
EMBED_DIM = 4096
WIDTH, HEIGHT, FRAMES = 64, 64, 5
TRAINING = {"batch_size": 2}  # the refiner on the real token count is most of the cost
NOTES = ("umT5-XXL 4096 as Wan 2.1: padded to 512 tokens with zeroed pad rows; extras: pooled_output None only. "
         "48-channel latent at 16x spatial compression (B, 48, 1+(F-1)//4, H/16, W/16) from Wan22ImageToVideoLatent; "
         "a start image would add a noise_mask (per-frame timesteps); A14B T2V checkpoints detect as WAN21_T2V")

MIN_LENGTH = wan21.MIN_LENGTH

# comfy/model_detection.py for wan2.2_ti2v_5B_fp16.safetensors (ComfyUI's Wan 2.2 5B template).
FULL_5B = {"dim": 3072, "ffn_dim": 14336, "num_heads": 24, "num_layers": 30}


def build(seed: int = 0, dtype: torch.dtype = torch.float32, full_size: bool = False):
    """A ComfyUI ModelPatcher. Tiny by default; full_size=True gives what comfy/model_detection.py reads from
    wan2.2_ti2v_5B_fp16.safetensors: in/out 48, dim 3072, 30 blocks, 24 heads, ffn 14336."""
    unet = wan21._unet_config(dtype, False, in_dim=48, out_dim=48)
    if full_size:
        unet.update(FULL_5B)
    return tiny_models.seeded_model("WAN22_T2V", unet, seed)


def prompt(words: tuple[int, ...]) -> list:
    """[c (1, 512, 4096), {"pooled_output": None}]: the same umT5-XXL layout as Wan 2.1."""
    return wan21.prompt(words)


def empty_latent(batch: int = 1) -> torch.Tensor:
    """Wan22ImageToVideoLatent (comfy_extras/nodes_wan.py) without a start image, as ComfyUI's Wan 2.2 5B template
    uses it for text-to-video: (B, 48, 1+(FRAMES-1)//4, HEIGHT/16, WIDTH/16). The node makes batch 1 and only
    repeats to batch_size when it has a start image, so the batch is repeated here."""
    from comfy_extras.nodes_wan import Wan22ImageToVideoLatent

    out = Wan22ImageToVideoLatent.execute(vae=None, width=WIDTH, height=HEIGHT, length=FRAMES, batch_size=batch)
    out = out.result if hasattr(out, "result") else out
    samples = out[0]["samples"]
    return samples.repeat((batch,) + (1,) * (samples.ndim - 1)) if samples.shape[0] != batch else samples
