"""Builds workflows/*.json, workflows/api/*.json and workflows/*.jpg with the real ComfyUI frontend.

Each example graph is described below (nodes, widget values, links). The script starts a ComfyUI
server with this pack, builds every graph in headless chromium through LiteGraph, and saves what
the frontend's own menu commands write: Workflow > Export (the UI format users load) and Export
(API) (the format /prompt takes). Each gets the thumbnail the template browser shows (<name>.jpg): for
a template that runs as shipped (the toy world), the image that running it from the page saves; for the
others, which need a checkpoint, a screenshot of the loaded graph.

    .venv/bin/python -m scripts.build_workflows             # rewrite all of them
    .venv/bin/python -m scripts.build_workflows dice_apply  # just one

tests/test_browser.py proves that loading each UI file in the frontend converts to exactly its API
twin, and tests/test_e2e_server.py runs the API twins on a real server.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from dice_testkit import harness

WORKFLOWS = os.path.join(harness.REPO, "workflows")
API_DIR = os.path.join(WORKFLOWS, "api")
CKPT = "v1-5-pruned-emaonly-fp16.safetensors"  # the SD1.5 file name ComfyUI's own templates use
CKPT_URL = ("https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
            "v1-5-pruned-emaonly-fp16.safetensors?download=true")  # where ComfyUI's own templates fetch it
FRONTEND_ONLY = {"MarkdownNote", "Note"}  # nodes of the frontend itself: no Python pack to name
REFINER = "dice_refiner_00001.safetensors"  # what DICE Save Refiner writes first with its default prefix
SEED = 42

TRAIN_PROMPTS = "\n".join([
    "# one prompt per line; use prompts like the ones you will generate",
    "a photo of a cat sitting on a windowsill",
    "a watercolor painting of a lighthouse at dusk",
    "a portrait of an old fisherman, dramatic lighting",
    "a bowl of ramen, food photography",
    "a futuristic city skyline at night, neon lights",
    "a red vintage car parked on a cobblestone street",
    "an oil painting of a mountain lake in autumn",
    "a cozy cabin in a snowy forest",
])
PROMPT = "a watercolor painting of a lighthouse at dusk, detailed, soft light"
NEGATIVE = "blurry, low quality, watermark, text"

NOTE_TRAIN = """## DICE: train a refiner

**DICE** (*Distilling Classifier-Free Guidance into Text Embeddings*) learns a small **refiner** that
rewrites the prompt embedding so that **KSampler at cfg 1.0 looks like cfg 5**, with one model pass
per step instead of two (about half the sampling cost).

1. **Load Checkpoint**: the model you want to speed up (SD1.5, SDXL, PixArt). It is the frozen
   CFG teacher and is not modified.
2. **DICE Train Refiner**: put prompts like the ones you will generate in *prompts*, one per line
   (a few dozen or more is best; `#` lines are ignored). *guidance_scale* is the cfg the refiner
   learns to reproduce; *width/height* should be your generation size. Data-free: the teacher makes
   its own training latents. 1000 steps at batch 8 take a while on a GPU; the progress bar shows
   the loss curve, and cancelling keeps a resumable `<prefix>_checkpoint.safetensors`.
3. **DICE Save Refiner** writes `models/dice/dice_refiner_00001.safetensors`.

The previews show the loss curve and which token positions the refiner changes.
Next: open **dice_apply.json**.
"""

NOTE_APPLY = """## DICE: sample at cfg 1.0 with a refiner

1. **DICE Load Refiner** picks a refiner from `models/dice` (train one with **dice_train.json**).
   Use it with the checkpoint it was trained for.
2. **DICE Refine Conditioning** rewrites your prompt embedding: `c' = c + strength * R(c, uc)`.
   *strength* 1.0 reproduces the guidance the refiner learned; lower gives less (above about 1.5 images get worse).
3. **KSampler at cfg 1.0**: ComfyUI then skips the unconditional pass, so every step costs one
   model call instead of two. The negative input is unused at cfg 1.0 (it is zeroed here).

Do not raise cfg above 1.0 with refined conditioning: the refiner already contains the guidance.
"""

NOTE_COMPARE = """## DICE: cfg 5 vs cfg 1 + refiner

Same checkpoint, prompt, seed and sampler, two ways:

* **left**: plain CFG, KSampler at **cfg 5** (two model passes per step);
* **right**: DICE, the refined prompt with KSampler at **cfg 1.0** (one pass per step).

**Image Stitch** puts them side by side in one saved image. With a refiner trained at
guidance_scale 5 for this checkpoint, the right image should look close to the left one at about
half the sampling time. The seed is fixed on both samplers so they start from the same noise.
"""

NOTE_NEGATIVE = """## DICE with a negative prompt

At cfg 1.0 KSampler ignores its negative input, so a negative prompt has to go **into the refiner**:
connect it to **DICE Refine Conditioning**'s optional **negative** input, where it replaces the
empty prompt as `uc` in `c' = c + strength * R(c, uc)`.

The refiner must have been **trained with negatives**: put the negatives you use, one per line, in
**DICE Train Refiner**'s *negative_prompts*. A refiner trained the paper's way (empty prompt only)
all but ignores a negative, and DICE Refine Conditioning says so in the console. BENCHMARKS.md
("Negative prompts") measures both. Without a negative connected, the refiner uses the
empty-prompt embedding stored in its file.
"""

NOTE_DIAL = """## DICE with a guidance dial

**DICE Refine Conditioning**'s *guidance_scale* is the cfg the refined prompt reproduces at cfg 1.0
(0: the scale the refiner was trained for). It works as a dial for a **dial refiner**: train it with
**DICE Train Refiner**'s *guidance_range_min* / *guidance_range_max* (for example 2 and 10), which
costs no more teacher calls. With *timestep_stages* 0.08, 0.24, 0.5 as well, the dial measured in the
toy world kept at least 0.92 of CFG's gain at w = 3, 5, 7 and 9. A refiner trained for one scale can
only scale its change, which falls short above its scale (a console warning says so).
BENCHMARKS.md ("Guidance dial") measures both.

Here the dial is set to 7. Sample at cfg 1.0: the guidance is in the prompt.
"""


TOY_PROMPT = "a blue square at the bottom"  # a held-out combination: the toy base model never saw it in training

NOTE_TOYWORLD = """## DICE in two minutes, with nothing to download

This template runs as shipped, on the pack's own **toy world**: a real SD1.5-family UNet trained on
16x16 coloured shapes, with captions like *a red square on the left* (colours red green blue yellow
magenta cyan; shapes cross square triangle; positions left right top bottom).

1. **DICE Train Refiner** distils this model's cfg 5 into a refiner (300 steps; the whole run takes
   under two minutes on two CPU cores). The prompt below is a combination the model never saw in training.
2. Three samplers start from the same noise: **cfg 1** (one pass per step), **cfg 5** (two passes) and
   **cfg 1 with the refined prompt** (one pass).
3. **Save Image** writes one row per seed: *cfg 1 | cfg 5 | DICE at cfg 1*.

300 steps keep the run short. BENCHMARKS.md measures a 1000-step refiner on 360 held-out pairs: cfg 1
draws the asked-for colour, shape and place in 0.33 of them, cfg 5 in 0.91, DICE at cfg 1 in 0.82
(0.84 of cfg 5's gain) at half the model calls. Then try **dice_train.json** with your own checkpoint.
"""

NOTE_TOYWORLD_LORA = """## DICE with a LoRA on the model, with nothing to download

Users stack LoRAs on the checkpoint a refiner was trained for. This template runs as shipped on the
pack's **toy world** with its **toy style LoRA** (*dice-toyworld/pastel_style*, rank 4, 2.5% of the
UNet: every object drawn in pastel), loaded with ComfyUI's own **LoraLoaderModelOnly**.

1. **DICE Train Refiner** trains on the model **with** the LoRA (300 steps): the LoRA's model is
   the CFG teacher.
2. The three samplers use the same stacked model: **cfg 1**, **cfg 5**, and **cfg 1 with the
   refined prompt**. DICE Refine Conditioning reads the MODEL to check that it is the one the refiner
   was trained for, LoRAs included, and warns in the console when it is not.
3. **Save Image** writes one row per seed: *cfg 1 | cfg 5 | DICE at cfg 1*, all pastel.

Why retrain for a LoRA: measured on 360 held-out pairs (BENCHMARKS.md, "A refiner under a LoRA"), a
refiner trained on the model **without** this LoRA recovers 0.70 of cfg 5's gain on the model with it;
one trained **with** it recovers 0.86. Then do the same with your own checkpoint and LoRA in
**dice_train.json**: put the LoRA loader before DICE Train Refiner.
"""


def spec_toyworld(lora: bool = False) -> list[dict]:
    """The toy world template; with lora, the pack's toy style LoRA is stacked on the model, and the refiner is
    trained on the stacked model, the way that measured best (benchmarks/transfer_study.py)."""
    sampler = {"seed": SEED, "control_after_generate": "fixed", "steps": 20, "sampler_name": "euler",
               "scheduler": "normal", "denoise": 1.0}
    sampling_model = ("lora", 0) if lora else ("toy", 0)

    def ksampler(key, title, positive, cfg, y):
        return {"key": key, "type": "KSampler", "pos": [1100, y], "title": title,
                "inputs": {"model": sampling_model, "positive": positive, "negative": ("neg", 0),
                           "latent_image": ("latent", 0)},
                "widgets": {**sampler, "cfg": cfg}}

    def decode(key, samples, y):
        return {"key": key, "type": "VAEDecode", "pos": [1420, y], "inputs": {"samples": (samples, 0), "vae": ("toy", 2)}}

    stitch = {"direction": "right", "match_image_size": True, "spacing_width": 8, "spacing_color": "white"}
    refine_inputs = {"positive": ("pos", 0), "refiner": ("train", 0)}
    lora_nodes = []
    if lora:
        from toyworld.world import PASTEL_LORA_NAME

        refine_inputs["model"] = ("lora", 0)  # only read: the family check, as on any user's stacked model
        lora_nodes = [{"key": "lora", "type": "LoraLoaderModelOnly", "pos": [0, 260], "title": "LoRA (pastel style)",
                       "inputs": {"model": ("toy", 0)}, "widgets": {"lora_name": PASTEL_LORA_NAME, "strength_model": 1.0}}]
    return [
        _note(NOTE_TOYWORLD_LORA if lora else NOTE_TOYWORLD, [0, -330], [1400, 300]),
        {"key": "toy", "type": "DiceToyWorldLoader", "pos": [0, 40]},
        *lora_nodes,
        {"key": "train", "type": "DiceTrainRefiner", "pos": [340, 40], "size": [400, 700],
         "inputs": {"model": sampling_model, "clip": ("toy", 1)},
         "widgets": {"prompts": "\n".join(_toy_train_captions()), "steps": 300, "batch_size": 16, "guidance_scale": 5.0,
                     "seed": 0, "width": 128, "height": 128, "samples_per_prompt": 4, "teacher_steps": 20,
                     "save_every": 0, "filename_prefix": "dice_toyworld"}},
        {"key": "loss", "type": "PreviewImage", "pos": [780, 680], "size": [300, 260], "title": "Loss curve",
         "inputs": {"images": ("train", 1)}},
        {"key": "pos", "type": "CLIPTextEncode", "pos": [780, 40], "size": [280, 110], "title": "Prompt (held out)",
         "inputs": {"clip": ("toy", 1)}, "widgets": {"text": TOY_PROMPT}},
        {"key": "neg", "type": "CLIPTextEncode", "pos": [780, 200], "size": [280, 110], "title": "Negative (empty)",
         "inputs": {"clip": ("toy", 1)}, "widgets": {"text": ""}},
        {"key": "refine", "type": "DiceRefineConditioning", "pos": [780, 360],
         "inputs": refine_inputs, "widgets": {"strength": 1.0}},
        {"key": "latent", "type": "EmptyLatentImage", "pos": [780, 520],
         "widgets": {"width": 128, "height": 128, "batch_size": 4}},
        ksampler("ks1", "KSampler cfg 1 (no DICE)", ("pos", 0), 1.0, 40),
        ksampler("ks5", "KSampler cfg 5 (the teacher)", ("pos", 0), 5.0, 340),
        ksampler("ksd", "KSampler cfg 1 + DICE", ("refine", 0), 1.0, 640),
        decode("dec1", "ks1", 40), decode("dec5", "ks5", 340), decode("decd", "ksd", 640),
        {"key": "st1", "type": "ImageStitch", "pos": [1420, 760], "title": "cfg 1 | cfg 5",
         "inputs": {"image1": ("dec1", 0), "image2": ("dec5", 0)}, "widgets": stitch},
        {"key": "st2", "type": "ImageStitch", "pos": [1420, 900], "title": "cfg 1 | cfg 5 | DICE",
         "inputs": {"image1": ("st1", 0), "image2": ("decd", 0)}, "widgets": stitch},
        {"key": "out", "type": "SaveImage", "pos": [1720, 40], "size": [420, 520], "inputs": {"images": ("st2", 0)},
         "widgets": {"filename_prefix": "DICE/toyworld_lora" if lora else "DICE/toyworld"}},
    ]


def spec_toyworld_lora() -> list[dict]:
    return spec_toyworld(lora=True)


# Wan 2.1 T2V 1.3B as ComfyUI's own Wan templates load it (Comfy-Org's repackaged files).
WAN_REPO = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN_FILES = {  # loader: (file, models/ folder)
    "UNETLoader": ("wan2.1_t2v_1.3B_fp16.safetensors", "diffusion_models"),
    "CLIPLoader": ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
    "VAELoader": ("wan_2.1_vae.safetensors", "vae"),
}
VIDEO_PROMPT = "a red fox running through fresh snow in a birch forest, morning light"
VIDEO_TRAIN_PROMPTS = "\n".join([
    "# one prompt per line; video prompts like the ones you will generate",
    "a red fox running through fresh snow in a birch forest",
    "waves breaking on a rocky coast at sunset, aerial shot",
    "a paper boat drifting down a rain-filled street",
    "a hot air balloon rising over green hills at dawn",
    "a chef tossing vegetables in a flaming wok, close-up",
    "time-lapse of clouds moving over a mountain lake",
    "a cat jumping onto a bookshelf in a cozy library",
    "neon signs reflected in puddles on a city street at night",
])

NOTE_VIDEO = """## DICE for a video model (Wan 2.1 T2V 1.3B)

Video families pay most for CFG: every step runs the whole clip twice. A refiner trained on this model
lets **KSampler run at cfg 1.0**, one pass per step.

1. **Load Diffusion Model / Load CLIP / Load VAE**: Wan 2.1 T2V 1.3B as ComfyUI's own Wan templates load
   it (ComfyUI-Manager offers the three files). **ModelSamplingSD3** (shift 8) goes before both the
   trainer and the sampler, so the teacher is the model you sample.
2. **DICE Train Refiner** with your kind of prompts. Train small: the teacher's cost grows with
   width x height x *frames* (320 x 320 and 9 frames here); the refiner works on the text, so it
   applies at any size and length.
3. **DICE Refine Conditioning**, then **KSampler at cfg 1.0** on an 832 x 480, 33-frame latent, and
   **Save Animated WEBP**.

Train once per checkpoint; save the refiner with **DICE Save Refiner** and load it with **DICE Load
Refiner** next time instead of training again.
"""


def spec_video() -> list[dict]:
    loaders = [
        {"key": "unet", "type": "UNETLoader", "pos": [0, 40], "title": "Load Diffusion Model", "widgets": {"unet_name": WAN_FILES["UNETLoader"][0]}},
        {"key": "clip", "type": "CLIPLoader", "pos": [0, 200], "title": "Load CLIP", "widgets": {"clip_name": WAN_FILES["CLIPLoader"][0],
                                                                           "type": "wan"}},
        {"key": "vae", "type": "VAELoader", "pos": [0, 380], "title": "Load VAE", "widgets": {"vae_name": WAN_FILES["VAELoader"][0]}},
    ]
    return [
        _note(NOTE_VIDEO, [0, -330], [1500, 300]),
        *loaders,
        {"key": "shift", "type": "ModelSamplingSD3", "pos": [340, 40], "title": "ModelSamplingSD3 (shift 8)", "inputs": {"model": ("unet", 0)},
         "widgets": {"shift": 8.0}},
        {"key": "train", "type": "DiceTrainRefiner", "pos": [340, 160], "size": [400, 700],
         "inputs": {"model": ("shift", 0), "clip": ("clip", 0)},
         "widgets": {"prompts": VIDEO_TRAIN_PROMPTS, "steps": 1000, "batch_size": 4, "guidance_scale": 6.0, "seed": 0,
                     "width": 320, "height": 320, "frames": 9, "samples_per_prompt": 2, "teacher_steps": 20,
                     "save_every": 250, "filename_prefix": "dice_wan21"}},
        {"key": "save", "type": "DiceSaveRefiner", "pos": [1260, 520], "inputs": {"refiner": ("train", 0)},
         "widgets": {"filename_prefix": "dice_wan21", "keep_optimizer_state": False}},
        {"key": "pos", "type": "CLIPTextEncode", "pos": [800, 40], "size": [400, 150], "title": "Prompt",
         "inputs": {"clip": ("clip", 0)}, "widgets": {"text": VIDEO_PROMPT}},
        {"key": "refine", "type": "DiceRefineConditioning", "pos": [800, 240],
         "inputs": {"positive": ("pos", 0), "refiner": ("train", 0)}, "widgets": {"strength": 1.0}},
        {"key": "zero", "type": "ConditioningZeroOut", "pos": [800, 400], "title": "Negative: unused at cfg 1.0",
         "inputs": {"conditioning": ("pos", 0)}},
        {"key": "latent", "type": "EmptyHunyuanLatentVideo", "pos": [800, 480], "title": "Empty video latent (Wan)",
         "widgets": {"width": 832, "height": 480, "length": 33, "batch_size": 1}},
        {"key": "ks", "type": "KSampler", "pos": [1260, 40], "title": "KSampler (cfg 1.0 + DICE)",
         "inputs": {"model": ("shift", 0), "positive": ("refine", 0), "negative": ("zero", 0), "latent_image": ("latent", 0)},
         "widgets": {"seed": SEED, "control_after_generate": "fixed", "steps": 30, "cfg": 1.0, "sampler_name": "uni_pc",
                     "scheduler": "simple", "denoise": 1.0}},
        {"key": "decode", "type": "VAEDecode", "pos": [1560, 40], "title": "VAE Decode",
         "inputs": {"samples": ("ks", 0), "vae": ("vae", 0)}},
        {"key": "out", "type": "SaveAnimatedWEBP", "pos": [1560, 160], "size": [420, 420], "title": "Save Animated WEBP",
         "inputs": {"images": ("decode", 0)},
         "widgets": {"filename_prefix": "DICE/wan21", "fps": 16.0, "lossless": False, "quality": 90, "method": "default"}},
    ]


def _toy_train_captions() -> list[str]:
    from toyworld import world

    return world.TRAIN_CAPTIONS


def _ckpt(pos):
    return {"key": "ckpt", "type": "CheckpointLoaderSimple", "pos": pos, "widgets": {"ckpt_name": CKPT}}


def _note(text, pos, size):
    return {"key": "note", "type": "MarkdownNote", "pos": pos, "size": size, "title": "About this workflow",
            "widgets": {"text": text}}


def spec_train() -> list[dict]:
    return [
        _note(NOTE_TRAIN, [0, -290], [1140, 260]),
        _ckpt([0, 40]),
        {"key": "train", "type": "DiceTrainRefiner", "pos": [340, 40], "size": [400, 700],
         "inputs": {"model": ("ckpt", 0), "clip": ("ckpt", 1)},
         "widgets": {"prompts": TRAIN_PROMPTS, "steps": 1000, "batch_size": 8, "guidance_scale": 5.0, "seed": 0,
                     "width": 512, "height": 512, "samples_per_prompt": 4, "teacher_steps": 20, "save_every": 250,
                     "filename_prefix": "dice_refiner"}},
        {"key": "save", "type": "DiceSaveRefiner", "pos": [800, 40], "inputs": {"refiner": ("train", 0)},
         "widgets": {"filename_prefix": "dice_refiner", "keep_optimizer_state": True}},
        {"key": "loss", "type": "PreviewImage", "pos": [800, 200], "size": [340, 260], "title": "Loss curve",
         "inputs": {"images": ("train", 1)}},
        {"key": "sharp", "type": "PreviewImage", "pos": [800, 500], "size": [340, 260], "title": "Sharpening pattern",
         "inputs": {"images": ("train", 2)}},
    ]


def _apply_core(negative: bool, dial: float = 0.0, prefix: str | None = None) -> list[dict]:
    nodes = [
        _ckpt([0, 40]),
        {"key": "loader", "type": "DiceLoadRefiner", "pos": [0, 200], "widgets": {"refiner_name": REFINER}},
        {"key": "pos", "type": "CLIPTextEncode", "pos": [300, 40], "size": [400, 150], "title": "Prompt",
         "inputs": {"clip": ("ckpt", 1)}, "widgets": {"text": PROMPT}},
    ]
    refine_inputs = {"positive": ("pos", 0), "refiner": ("loader", 0)}
    if negative:
        nodes.append({"key": "neg", "type": "CLIPTextEncode", "pos": [300, 250], "size": [400, 120],
                      "title": "Negative prompt (goes into the refiner)", "inputs": {"clip": ("ckpt", 1)},
                      "widgets": {"text": NEGATIVE}})
        refine_inputs["negative"] = ("neg", 0)
    nodes += [
        {"key": "refine", "type": "DiceRefineConditioning", "pos": [760, 40], "inputs": refine_inputs,
         "title": f"DICE Refine Conditioning (dial {dial:g})" if dial else None,
         "widgets": {"strength": 1.0, "guidance_scale": dial}},
        {"key": "zero", "type": "ConditioningZeroOut", "pos": [760, 220], "title": "Negative: unused at cfg 1.0",
         "inputs": {"conditioning": ("pos", 0)}},
        {"key": "latent", "type": "EmptyLatentImage", "pos": [760, 280], "widgets": {"width": 512, "height": 512,
                                                                                    "batch_size": 1}},
        {"key": "ks", "type": "KSampler", "pos": [1060, 40], "title": "KSampler (cfg 1.0)",
         "inputs": {"model": ("ckpt", 0), "positive": ("refine", 0), "negative": ("zero", 0), "latent_image": ("latent", 0)},
         "widgets": {"seed": SEED, "control_after_generate": "fixed", "steps": 20, "cfg": 1.0, "sampler_name": "euler",
                     "scheduler": "normal", "denoise": 1.0}},
        {"key": "decode", "type": "VAEDecode", "pos": [1360, 40], "inputs": {"samples": ("ks", 0), "vae": ("ckpt", 2)}},
        {"key": "out", "type": "SaveImage", "pos": [1360, 140], "size": [320, 340],
         "inputs": {"images": ("decode", 0)},
         "widgets": {"filename_prefix": prefix or ("DICE/negative" if negative else "DICE/apply")}},
    ]
    return [_without_empty_title(n) for n in nodes]


def _without_empty_title(node: dict) -> dict:
    """A node keeps its default title where the spec gives none."""
    return {k: v for k, v in node.items() if not (k == "title" and v is None)}


def spec_apply() -> list[dict]:
    return [_note(NOTE_APPLY, [0, -250], [1300, 220])] + _apply_core(negative=False)


def spec_negative() -> list[dict]:
    return [_note(NOTE_NEGATIVE, [0, -250], [1300, 220])] + _apply_core(negative=True)


def spec_dial() -> list[dict]:
    return [_note(NOTE_DIAL, [0, -250], [1300, 220])] + _apply_core(negative=False, dial=7.0, prefix="DICE/dial")


def spec_compare() -> list[dict]:
    sampler = {"seed": SEED, "control_after_generate": "fixed", "steps": 20, "sampler_name": "euler",
               "scheduler": "normal", "denoise": 1.0}
    return [
        _note(NOTE_COMPARE, [0, -250], [1300, 220]),
        _ckpt([0, 40]),
        {"key": "loader", "type": "DiceLoadRefiner", "pos": [0, 200], "widgets": {"refiner_name": REFINER}},
        {"key": "pos", "type": "CLIPTextEncode", "pos": [300, 40], "size": [400, 150], "title": "Prompt",
         "inputs": {"clip": ("ckpt", 1)}, "widgets": {"text": PROMPT}},
        {"key": "neg", "type": "CLIPTextEncode", "pos": [300, 250], "size": [400, 110],
         "title": "Negative (empty, as the refiner was trained)", "inputs": {"clip": ("ckpt", 1)}, "widgets": {"text": ""}},
        {"key": "latent", "type": "EmptyLatentImage", "pos": [300, 410], "widgets": {"width": 512, "height": 512,
                                                                                    "batch_size": 1}},
        {"key": "refine", "type": "DiceRefineConditioning", "pos": [760, 40], "inputs": {"positive": ("pos", 0),
                                                                                        "refiner": ("loader", 0)},
         "widgets": {"strength": 1.0}},
        {"key": "ks_cfg", "type": "KSampler", "pos": [1060, 40], "title": "KSampler cfg 5 (baseline)",
         "inputs": {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0), "latent_image": ("latent", 0)},
         "widgets": {**sampler, "cfg": 5.0}},
        {"key": "ks_dice", "type": "KSampler", "pos": [1060, 340], "title": "KSampler cfg 1.0 + DICE",
         "inputs": {"model": ("ckpt", 0), "positive": ("refine", 0), "negative": ("neg", 0), "latent_image": ("latent", 0)},
         "widgets": {**sampler, "cfg": 1.0}},
        {"key": "dec_cfg", "type": "VAEDecode", "pos": [1360, 40], "inputs": {"samples": ("ks_cfg", 0),
                                                                            "vae": ("ckpt", 2)}},
        {"key": "dec_dice", "type": "VAEDecode", "pos": [1360, 340], "inputs": {"samples": ("ks_dice", 0),
                                                                              "vae": ("ckpt", 2)}},
        {"key": "stitch", "type": "ImageStitch", "pos": [1360, 460], "title": "left: cfg 5 | right: cfg 1 + DICE",
         "inputs": {"image1": ("dec_cfg", 0), "image2": ("dec_dice", 0)},
         "widgets": {"direction": "right", "match_image_size": True, "spacing_width": 8, "spacing_color": "white"}},
        {"key": "out", "type": "SaveImage", "pos": [1660, 40], "size": [420, 320], "inputs": {"images": ("stitch", 0)},
         "widgets": {"filename_prefix": "DICE/compare"}},
    ]


def node_properties(node_type: str) -> dict:
    """What ComfyUI-Manager reads from a shared workflow: the pack that provides each node (cnr_id, ver: the
    Registry id and version, comfy-core for ComfyUI's own nodes) and, on a loader, the model to download."""
    if node_type in FRONTEND_ONLY:
        return {}
    if node_type.startswith("Dice"):
        import tomllib

        with open(os.path.join(harness.REPO, "pyproject.toml"), "rb") as f:
            project = tomllib.load(f)["project"]
        props = {"cnr_id": project["name"], "ver": project["version"]}
    else:
        props = {"cnr_id": "comfy-core", "ver": harness.comfyui_version()}
    if node_type == "CheckpointLoaderSimple":
        props["models"] = [{"name": CKPT, "url": CKPT_URL, "directory": "checkpoints"}]
    if node_type in WAN_FILES:
        name, folder = WAN_FILES[node_type]
        props["models"] = [{"name": name, "url": f"{WAN_REPO}/{folder}/{name}", "directory": folder}]
    return props


SPECS = {
    "dice_train": spec_train,
    "dice_apply": spec_apply,
    "dice_compare": spec_compare,
    "dice_negative_prompt": spec_negative,
    "dice_dial": spec_dial,
    "dice_toyworld": spec_toyworld,
    "dice_lora": spec_toyworld_lora,
    "dice_video_wan21": spec_video,
}

BUILD_JS = """async (spec) => {
  const app = window.app, LG = window.LiteGraph;
  app.graph.clear();
  const byKey = {};
  for (const s of spec) {
    const node = LG.createNode(s.type);
    if (!node) throw new Error('unknown node type ' + s.type);
    app.graph.add(node);
    node.pos = s.pos;
    if (s.title) node.title = s.title;
    Object.assign(node.properties ||= {}, s.properties || {});
    for (const [name, value] of Object.entries(s.widgets || {})) {
      const w = (node.widgets || []).find(w => w.name === name);
      if (!w) throw new Error(s.type + ' has no widget ' + name);
      w.value = value;
    }
    byKey[s.key] = node;
  }
  for (const s of spec) {
    const dst = byKey[s.key];
    for (const [input, [srcKey, slot]] of Object.entries(s.inputs || {})) {
      const idx = dst.findInputSlot(input);
      if (idx < 0) throw new Error(s.type + ' has no input ' + input);
      if (!byKey[srcKey].connect(slot, dst, idx)) throw new Error('could not connect ' + srcKey + '[' + slot + '] -> ' + s.key + '.' + input);
    }
  }
  for (const s of spec) {   // sizes last: connecting can resize a node
    const node = byKey[s.key];
    const min = node.computeSize();
    node.size = s.size ? [Math.max(s.size[0], min[0]), Math.max(s.size[1], min[1])] : min;
  }
  app.graph.setDirtyCanvas(true, true);
  return app.graph.nodes.length;
}"""


def build(names: list[str] | None = None, out_dir: str = WORKFLOWS) -> list[str]:
    from dice_testkit import browser_util, comfy_server

    problem = browser_util.chromium_problem()
    if problem:
        raise SystemExit(problem)
    names = names or list(SPECS)
    written = []
    with tempfile.TemporaryDirectory(prefix="dice-build-") as base, comfy_server.ComfyServer(base) as server:
        with browser_util.browser_page() as page:
            page.open(server.url)
            os.makedirs(os.path.join(out_dir, "api"), exist_ok=True)
            for name in names:
                spec = [{**node, "properties": node_properties(node["type"])} for node in SPECS[name]()]
                n = page.evaluate(BUILD_JS, spec)
                ui = page.download("Comfy.ExportWorkflow", os.path.join(out_dir, f"{name}.json"))
                api = page.download("Comfy.ExportWorkflowAPI", os.path.join(out_dir, "api", f"{name}.json"))
                for path in (ui, api):  # stable, readable files
                    with open(path, encoding="utf-8") as f:
                        data = json.load(f)
                    with open(path, "w", encoding="utf-8") as f:
                        json.dump(data, f, indent=2, ensure_ascii=False)
                        f.write("\n")
                with open(ui, encoding="utf-8") as f:
                    page.load_workflow(json.load(f), f"{name}.json")
                jpg = os.path.join(out_dir, f"{name}.jpg")  # the template browser's thumbnail: <name>.jpg beside it
                if name in RUNS_AS_SHIPPED:
                    started = time.monotonic()
                    entry = page.queue_and_wait(server, timeout=1800)
                    print(f"{name}: ran as shipped from the page in {time.monotonic() - started:.0f} s "
                          f"(server at OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')})")
                    output_thumbnail(entry, server, jpg)
                else:
                    graph_thumbnail(page, jpg)
                written += [ui, api, jpg]
                print(f"{name}: {n} nodes -> {ui}, {api}, {jpg}")
    return written


# Templates that need no model file: their thumbnail is what running them from the page saves.
RUNS_AS_SHIPPED = {"dice_toyworld", "dice_lora"}


def output_thumbnail(entry: dict, server, path: str) -> str:
    """The images the run saved (one row per seed), stacked and enlarged 2x without smoothing, as JPEG."""
    from PIL import Image

    files = [img for out in entry["outputs"].values() for img in out.get("images", []) if img.get("type") == "output"]
    if not files:
        raise RuntimeError("the run saved no image to make a thumbnail from")
    rows = [Image.open(server.path("output", f["subfolder"], f["filename"])).convert("RGB") for f in files]
    gap = 8
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) - 1)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + gap
    sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST).save(path, quality=90)
    return path


def graph_thumbnail(page, path: str) -> str:
    """The workflow as a user opening it sees it. It needs a checkpoint no test can download, so this is the
    honest picture of it: the graph, not an image it made."""
    from PIL import Image

    # The build server has no checkpoint, so a frontend that checks models (0.33's) shows a missing-model
    # dialog; a user with the checkpoint sees none, and the thumbnail should not either.
    page.close_dialogs()
    page.page.wait_for_timeout(300)
    with tempfile.TemporaryDirectory() as tmp:
        png = page.fit_and_screenshot(os.path.join(tmp, "graph.png"))
        Image.open(png).convert("RGB").save(path, quality=88)
    return path


if __name__ == "__main__":
    build(sys.argv[1:] or None)
