"""ComfyUI objects for the toy world: a real MODEL, CLIP and a VAE-like object.

This is the only toyworld module that imports ComfyUI. ComfyUI must already be importable, with
`comfy.cli_args.args.cpu = True` set before `comfy.model_management` was first imported when there is
no GPU: dice_comfy.setup.setup_comfy does that, for the tests and for the scripts in this package.

MODEL  `comfy.supported_models.SD15(TOY_UNET_CONFIG).get_model({})`: a genuine SD1.5-family
       BaseModel (eps prediction, SD1.5's scaled-linear 1000-step schedule) holding a small
       `UNetModel` with context_dim 64 and 4 latent channels, wrapped in
       `comfy.model_patcher.ModelPatcher`. `type(model.model_config).__name__` is "SD15".
       Two deliberate departures from stock SD1.5, both set on the config instance:
         * num_heads = 4 (SD15 forces 8, which would leave 4-dim heads at 32 channels);
         * latent_format = ToyLatentFormat (scale_factor 1.0 instead of 0.18215, and
           latent_rgb_factors equal to world.LATENT_MAP so ComfyUI's Latent2RGB previews are
           exact). So a LATENT's "samples" are exactly world.rgb_to_latent(image).
CLIP   a real `comfy.sd.CLIP` around the frozen ToyTextEncoder, so CLIPTextEncode, CLIPSetLastLayer,
       clone(), hooks and prompt weights "(red:1.2)" behave as for SD1.5. CLIPTextEncode gives
       [[cond (1, 16, 64), {"pooled_output": (1, 64) end-token state}]].
VAE    ToyVAE: decode/encode through the fixed linear map, with SD-style 8x spatial scaling
       (nearest-neighbour up, area down): EmptyLatentImage 128x128 -> 16x16 latent -> VAEDecode
       -> 128x128 IMAGE of 8x8 blocks. world.latent_to_rgb gives the 16x16 image directly.

World 2 (world2.py) uses the same classes with its own files under weights/world2/:
`load_toy_world2()`. The tokenizer follows the text encoder's vocabulary (recorded in its file), the
UNet its config (recorded in its file, WORLD2_UNET_CONFIG), and the VAE is size-agnostic, so
EmptyLatentImage at 192x192 gives world 2's 24x24 latent.
"""
from __future__ import annotations

import json
import logging
import os

import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import torch
import torch.nn.functional as F

from . import world, world2
from .text_encoder import ToyTextEncoder

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
UNET_PATH = os.path.join(WEIGHTS_DIR, "base_unet.safetensors")
TEXT_ENCODER_PATH = os.path.join(WEIGHTS_DIR, "text_encoder.safetensors")
WORLD2_WEIGHTS_DIR = os.path.join(WEIGHTS_DIR, "world2")
WORLD2_UNET_PATH = os.path.join(WORLD2_WEIGHTS_DIR, "base_unet.safetensors")
WORLD2_TEXT_ENCODER_PATH = os.path.join(WORLD2_WEIGHTS_DIR, "text_encoder.safetensors")
# World 2's headline uses two base models trained alike but for their seed: base seed 0 is WORLD2_UNET_PATH.
WORLD2_UNET_SEED1_PATH = os.path.join(WORLD2_WEIGHTS_DIR, "base_unet_seed1.safetensors")
# A DICE refiner for base seed 0, written by make bench's toyworld2 section (benchmarks/toyworld2_table.py,
# --ship-refiner) with the figures it was measured at, so that a CI-sized test can check them without training.
WORLD2_REFINER_PATH = os.path.join(WORLD2_WEIGHTS_DIR, "dice_refiner.safetensors")


def world2_base_paths() -> list[str]:
    """The shipped world-2 base models, base seed 0 first; those not shipped yet are left out."""
    return [p for p in (WORLD2_UNET_PATH, WORLD2_UNET_SEED1_PATH) if os.path.exists(p)]
# The toy style LoRA (toyworld/train_lora.py). LORA_ROOT is a "loras" path once register_toy_lora_folder has run,
# so ComfyUI's LoRA loaders list the file as LORA_NAME: one entry, named for the pack.
LORA_ROOT = os.path.join(WEIGHTS_DIR, "loras")
LORA_NAME = world.PASTEL_LORA_NAME
LORA_PATH = os.path.join(LORA_ROOT, *LORA_NAME.split("/"))

# A 3-level UNet at 16/8/4 px with 64 channels everywhere, one res block per level, self+cross
# attention at 8 and 4 px and in the middle block. Keys follow ComfyUI's model_detection output for
# SD1.5 checkpoints. 64 (not 32) channels matter: ComfyUI's GroupNorm has 32 groups, and with one
# channel per group the final norm erases each sample's per-channel mean and scale, so the UNet
# cannot reproduce the noise's mean: eps then misses by ~1/16 per channel and x0 = x - sigma*eps
# by ~0.9 at sigma_max 14.6, and ComfyUI's samplers (no x0 clipping) produce garbage.
TOY_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 64,
    "num_res_blocks": [1, 1, 1],
    "channel_mult": [1, 1, 1],
    "transformer_depth": [0, 1, 1],
    "transformer_depth_output": [1, 1, 1, 1, 0, 0],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": 64,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}
TOY_NUM_HEADS = 4
# World 2's UNet: the same network at 24/12/6 px (the latent is 24x24), 2.14M parameters. Measured on 1 thread
# of the shared 2-core machine (batch 64, forward + backward): 3.0-3.6 s a step, against 4.4-5.6 s for
# channel_mult [1, 2, 2] (6.1M) and 5.3-6.8 s for 96 channels (4.8M). The training budget (under an hour on
# 2 cores) buys about 900 steps of batch 64 at this size, so the size is chosen for steps.
WORLD2_UNET_CONFIG = dict(TOY_UNET_CONFIG)
LATENT_SCALE = 8  # spatial factor of ToyVAE (image px per latent px), as SD's VAE


class ToyLatentFormat(comfy.latent_formats.LatentFormat):
    """Identity scaling; previews decode with the exact linear map."""

    scale_factor = 1.0
    latent_channels = world.LATENT_CHANNELS

    def __init__(self):
        self.latent_rgb_factors = world.LATENT_MAP.tolist()  # (4, 3): rgb = latent @ factors
        self.latent_rgb_factors_bias = None


# ------------------------------------------------------------------------------------- MODEL
class ToyVPredictionSD15(comfy.supported_models.SD15):
    """SD15 with v-prediction, as ComfyUI runs SD1.5-architecture v-prediction fine-tunes: the UNet predicts
    v = (eps - sigma * x0) / sqrt(sigma^2 + 1), so near sigma_max its output is about -x0, where an eps model's
    x0 = x - sigma * eps multiplies the eps error by sigma (toyworld/diagnose.py measures what that costs)."""

    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.V_PREDICTION


PREDICTIONS = {"eps": comfy.supported_models.SD15, "v": ToyVPredictionSD15}


def make_model_config(unet_config: dict | None = None, num_heads: int = TOY_NUM_HEADS, prediction: str = "eps"):
    """An SD15 model config for the toy UNet (fp32, no manual cast); prediction "eps" (SD1.5's) or "v"."""
    cfg = PREDICTIONS[prediction](dict(unet_config or TOY_UNET_CONFIG))
    cfg.unet_config["num_heads"] = num_heads  # SD15.unet_extra_config would force 8
    cfg.latent_format = ToyLatentFormat()
    cfg.set_inference_dtype(torch.float32, None)
    return cfg


def build_base_model(unet_config: dict | None = None, num_heads: int = TOY_NUM_HEADS, device=None,
                     prediction: str = "eps"):
    """An *uninitialised* BaseModel (ComfyUI layers use torch.empty: load or init every weight)."""
    return make_model_config(unet_config, num_heads, prediction).get_model({}, device=device)


@torch.no_grad()
def init_unet_weights(diffusion_model: torch.nn.Module, seed: int = 0) -> None:
    """Fresh-training init: torch's default init for every conv/linear/norm (ComfyUI's ops skip
    it), then zero the last layer of each residual branch and the output conv, as the original
    LDM code does (zero_module)."""
    torch.manual_seed(seed)
    for m in diffusion_model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Conv3d)):
            _torch_reset(m)
        elif isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            if m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
        elif isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight)
    zero = [diffusion_model.out[-1]]
    for name, m in diffusion_model.named_modules():
        if name.endswith("out_layers") and isinstance(m, torch.nn.Sequential):
            zero.append(m[-1])  # ResBlock's second conv
        elif name.endswith("proj_out"):
            zero.append(m)  # SpatialTransformer output projection
    for m in zero:
        m.weight.zero_()
        if m.bias is not None:
            m.bias.zero_()
    for p in diffusion_model.parameters():
        if not torch.isfinite(p).all():
            raise RuntimeError("init_unet_weights left a non-finite parameter")


def _torch_reset(m):
    for base in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d):
        if isinstance(m, base):
            base.reset_parameters(m)
            return


def save_unet(diffusion_model: torch.nn.Module, path: str, metadata: dict | None = None,
              unet_config: dict | None = None, num_heads: int = TOY_NUM_HEADS, prediction: str = "eps") -> None:
    from safetensors.torch import save_file
    meta = {"format": "toyworld-base-unet-v1",
            "unet_config": json.dumps(unet_config or TOY_UNET_CONFIG),
            "num_heads": str(num_heads),
            "model_config": "comfy.supported_models.SD15",
            "latent_format": "toyworld.comfy_objects.ToyLatentFormat (scale_factor 1.0)"}
    if prediction != "eps":  # files without the key are eps models, as every file before it was
        meta.update({"prediction": prediction, "model_config": "toyworld.comfy_objects.ToyVPredictionSD15"})
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    sd = {k: v.detach().float().contiguous().cpu() for k, v in diffusion_model.state_dict().items()}
    save_file(sd, path, metadata=meta)


def read_metadata(path: str) -> dict:
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        return dict(f.metadata() or {})


def load_base_model(path: str = UNET_PATH, device=None):
    """BaseModel with every UNet weight loaded (strict) from a base_unet safetensors file."""
    from safetensors.torch import load_file
    meta = read_metadata(path)
    unet_config = json.loads(meta["unet_config"]) if "unet_config" in meta else None
    num_heads = int(meta.get("num_heads", TOY_NUM_HEADS))
    model = build_base_model(unet_config, num_heads, device=device, prediction=meta.get("prediction", "eps"))
    model.diffusion_model.load_state_dict(load_file(path), strict=True)
    model.diffusion_model.requires_grad_(False)
    return model


def register_toy_lora_folder() -> None:
    """Let ComfyUI's own LoRA loader nodes find the toy LoRA, for the toy LoRA template (workflows/). A later
    entry: the user's models/loras stays first, where LoRAs are saved and listed first."""
    import folder_paths

    if LORA_ROOT not in folder_paths.get_folder_paths("loras"):
        folder_paths.add_model_folder_path("loras", LORA_ROOT)


def wrap_model_patcher(model):
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def load_model_patcher(path: str = UNET_PATH):
    return wrap_model_patcher(load_base_model(path))


# -------------------------------------------------------------------------------------- CLIP
class ToyTokenizer:
    """ComfyUI tokenizer interface for the toy vocabulary: {"toy": [[(id, weight), ...]]},
    one chunk of SEQ_LEN tokens (start, words, end, pads). ComfyUI's prompt-weight syntax
    "(word:1.3)" is parsed with comfy.sd1_clip.token_weights; longer prompts are truncated.
    `vocabulary` is the world module (ComfyUI instantiates the class itself, so it is a class attribute)."""

    key = "toy"
    vocabulary = world

    def __init__(self, embedding_directory=None, tokenizer_data={}):  # noqa: B006 (ComfyUI signature)
        pass

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs):
        text = comfy.sd1_clip.escape_important(text)
        if kwargs.get("disable_weights", False):
            segments = [(text, 1.0)]
        else:
            segments = comfy.sd1_clip.token_weights(text, 1.0)
        v = self.vocabulary
        max_words = v.SEQ_LEN - 2  # start and end
        words = []
        for seg, w in segments:
            for word in world.split_words(comfy.sd1_clip.unescape_important(seg)):
                words.append((v.VOCAB.get(word, v.UNK_ID), float(w)))
        if len(words) > max_words:
            logging.warning("toyworld: prompt has %d words, keeping the first %d", len(words), max_words)
            words = words[:max_words]
        chunk = [(v.START_ID, 1.0, 0)]
        chunk += [(tid, w, i + 1) for i, (tid, w) in enumerate(words)]
        chunk.append((v.END_ID, 1.0, 0))
        chunk += [(v.PAD_ID, 1.0, 0)] * (v.SEQ_LEN - len(chunk))
        if not return_word_ids:
            chunk = [(t, w) for t, w, _ in chunk]
        return {self.key: [chunk]}

    def untokenize(self, token_weight_pair):
        inv = {i: w for w, i in self.vocabulary.VOCAB.items()}
        return list(map(lambda a: (a, inv[a[0]]), token_weight_pair))

    def state_dict(self):
        return {}


class World2Tokenizer(ToyTokenizer):
    vocabulary = world2


TOKENIZERS = {"1": ToyTokenizer, "2": World2Tokenizer}  # by the text encoder file's "world" metadata


class ToyClipModel(torch.nn.Module, comfy.sd1_clip.ClipTokenWeightEncoder):
    """The `cond_stage_model` of the toy CLIP: ToyTextEncoder + ComfyUI's token-weight logic
    (weighted tokens are pushed away from the empty prompt, as for SD1.5)."""

    def __init__(self, device="cpu", dtype=None, model_options={}, encoder_path=TEXT_ENCODER_PATH):  # noqa: B006
        super().__init__()
        self.encoder = ToyTextEncoder.load(encoder_path).to(device)
        self.dtypes = {torch.float32}
        v = self.encoder.vocabulary
        self.end_id = v.END_ID
        self.special_tokens = {"start": v.START_ID, "end": v.END_ID, "pad": v.PAD_ID}
        self.layer = None

    def reset_clip_options(self):
        self.layer = None

    def set_clip_options(self, options):
        if "layer" in options:
            self.layer = options["layer"]

    def encode(self, token_lists):
        ids = torch.tensor([[int(t) for t in toks] for toks in token_lists], dtype=torch.long)
        layer = self.layer if self.layer is not None and self.layer != -1 else None
        with torch.no_grad():
            h = self.encoder(ids, layer=layer).float()
        end_pos = (ids == self.end_id).int().argmax(1)
        pooled = h[torch.arange(h.shape[0]), end_pos]
        return h, pooled

    def encode_token_weights(self, token_weight_pairs):
        pairs = token_weight_pairs[ToyTokenizer.key] if isinstance(token_weight_pairs, dict) else token_weight_pairs
        return comfy.sd1_clip.ClipTokenWeightEncoder.encode_token_weights(self, pairs)

    def load_sd(self, sd):
        return self.encoder.load_state_dict(sd, strict=False)


class _ToyClipTarget:
    def __init__(self, encoder_path: str):
        self.params = {"encoder_path": encoder_path}
        self.clip = ToyClipModel
        self.tokenizer = TOKENIZERS[read_metadata(encoder_path).get("world", "1")]


def load_clip(path: str = TEXT_ENCODER_PATH) -> comfy.sd.CLIP:
    return comfy.sd.CLIP(_ToyClipTarget(path), model_options={"dtype": torch.float32})


# --------------------------------------------------------------------------------------- VAE
class ToyVAE:
    """What VAEDecode / VAEEncode (and most other nodes) use from comfy.sd.VAE.

    decode: LATENT (B, 4, h, w) -> IMAGE (B, h*8, w*8, 3) in [0, 1]  (rgb = LATENT_MAP.T @ z)
    encode: IMAGE (B, H, W, 3) in [0, 1] -> LATENT (B, 4, H//8, W//8)  (area average, then map)
    """

    def __init__(self, scale: int = LATENT_SCALE):
        self.scale = scale
        self.downscale_ratio = scale
        self.upscale_ratio = scale
        self.latent_channels = world.LATENT_CHANNELS
        self.latent_dim = 2
        self.output_channels = 3
        self.crop_input = True
        self.first_stage_model = None
        self.patcher = None
        self.size = 0
        self.output_device = comfy.model_management.intermediate_device()

    def throw_exception_if_invalid(self):
        pass

    def model_size(self):
        return 0

    def get_ram_usage(self):
        return 0

    def get_sd(self):
        return {}

    def memory_used_encode(self, shape, dtype):
        return 0

    def memory_used_decode(self, shape, dtype):
        return 0

    def spacial_compression_decode(self):
        return self.upscale_ratio

    def spacial_compression_encode(self):
        return self.downscale_ratio

    def temporal_compression_decode(self):
        return None

    def vae_encode_crop_pixels(self, pixels):
        return comfy.sd.VAE.vae_encode_crop_pixels(self, pixels)

    def decode(self, samples_in, vae_options={}):  # noqa: B006
        z = samples_in.float().cpu()
        rgb = world.latent_to_rgb(z).clamp(-1, 1)
        img = (rgb + 1) / 2
        if self.scale != 1:
            img = F.interpolate(img, scale_factor=self.scale, mode="nearest")
        return img.movedim(1, -1).contiguous().to(self.output_device)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        return self.decode(samples)

    def encode(self, pixel_samples):
        px = self.vae_encode_crop_pixels(pixel_samples[..., :3]).float().cpu().movedim(-1, 1)
        px = px * 2 - 1
        if self.scale != 1:
            px = F.interpolate(px, size=(px.shape[2] // self.scale, px.shape[3] // self.scale), mode="area")
        return world.rgb_to_latent(px).to(self.output_device)

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        return self.encode(pixel_samples)


# -------------------------------------------------------------------------------- one call
def load_toy_world(unet_path: str = UNET_PATH, text_encoder_path: str = TEXT_ENCODER_PATH):
    """(MODEL as ModelPatcher, CLIP, VAE) built from the shipped weights."""
    return load_model_patcher(unet_path), load_clip(text_encoder_path), ToyVAE()


def load_toy_world2(unet_path: str = WORLD2_UNET_PATH, text_encoder_path: str = WORLD2_TEXT_ENCODER_PATH):
    """World 2's (MODEL, CLIP, VAE); the same classes as load_toy_world, with world 2's files."""
    return load_toy_world(unet_path, text_encoder_path)


def empty_latent(batch_size: int = 1, res: int = world.RES) -> dict:
    """A LATENT of zeros at a toy resolution (what EmptyLatentImage gives at res * 8 px; world2.RES for world 2)."""
    return {"samples": torch.zeros(batch_size, world.LATENT_CHANNELS, res, res)}
