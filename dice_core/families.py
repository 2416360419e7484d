"""What DICE needs to know about each model family, keyed by ComfyUI's model-config class name.

Kept pure (no ComfyUI import): the node layer passes in `type(model.model_config).__name__`.

Three kinds of family:
- CFG families, in `_FAMILIES`: text-conditioned models that ComfyUI samples with classifier-free
  guidance. DICE distils that guidance. Each one is tested on a tiny model of its real architecture
  (tests/test_family_*.py), or shares the architecture and text encoder of one that is (`same_as`).
- Guidance-distilled families, in `_NO_CFG`: they sample at cfg 1 by design, so there is no CFG for
  DICE to distil. Both DICE nodes say so in one sentence.
- Everything else (audio, 3D, image-conditioned video, upscalers, ...) gets an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .refiner import KEEP_CLIP_CHUNK_START, KEEP_FIRST, KEEP_NONE, KEEP_ZERO_ROWS


@dataclass(frozen=True)
class FamilyInfo:
    name: str  # ComfyUI's model-config class name
    label: str  # what users call it
    keep_rule: str  # token positions the refiner leaves as the text encoder made them
    default_loss: str  # the paper's choice where it made one: L1 on SD1.5, L2 on SDXL and the rest
    pad_to: int | None = None  # fixed token count the student sees; None keeps each prompt's own length
    video: bool = False  # latents are (C, frames, H, W)
    spatial_ratio: int = 8  # pixels per latent cell, where ComfyUI's latent format does not say (0.3.75)
    temporal_ratio: int = 1  # frames per latent frame after the first, likewise
    same_as: str | None = None  # an untested variant that shares this tested family's architecture and encoder
    # The model adds residuals in place (`x += ...`, Flux-style blocks): a tensor autograd saved is then
    # overwritten, and backpropagating to the prompt fails unless the student keeps its own copies.
    inplace_residuals: bool = False


def _cfg_families() -> dict[str, FamilyInfo]:
    clip, first, none, zero_rows = KEEP_CLIP_CHUNK_START, KEEP_FIRST, KEEP_NONE, KEEP_ZERO_ROWS
    rows = [
        # CLIP families: a start token per 77-token chunk, padded to 77.
        FamilyInfo("SD15", "SD 1.x", clip, "l1"),
        FamilyInfo("SD20", "SD 2.x", clip, "l1", same_as="SD15"),
        FamilyInfo("SDXL", "SDXL", clip, "l2"),
        FamilyInfo("SDXLRefiner", "SDXL refiner", clip, "l2", same_as="SDXL"),
        FamilyInfo("SSD1B", "SSD-1B", clip, "l2", same_as="SDXL"),
        FamilyInfo("Segmind_Vega", "Segmind Vega", clip, "l2", same_as="SDXL"),
        FamilyInfo("KOALA_700M", "KOALA 700M", clip, "l2", same_as="SDXL"),
        FamilyInfo("KOALA_1B", "KOALA 1B", clip, "l2", same_as="SDXL"),
        FamilyInfo("Stable_Cascade_C", "Stable Cascade stage C", clip, "l2", spatial_ratio=42),
        FamilyInfo("HunyuanDiT", "HunyuanDiT 1.0/1.1", clip, "l2"),
        FamilyInfo("HunyuanDiT1", "HunyuanDiT 1.2", clip, "l2", same_as="HunyuanDiT"),
        # SD3: 77 CLIP-L/G tokens (start token first) then T5 tokens; only position 0 is a start token.
        FamilyInfo("SD3", "SD3 / SD3.5", first, "l2"),
        # PixArt: ComfyUI's T5 gives the words and an end token, no padding. Padding to the 120 tokens
        # PixArt-alpha was trained on (the pack's first choice) measured worse: held-out loss 0.82x of the
        # unrefined prompt's against 0.67x unpadded (benchmarks/padding_study.py, BENCHMARKS.md), and padding
        # alone makes it 1.53x worse at strength 0. Refiner files that record a pad length still pad.
        FamilyInfo("PixArtAlpha", "PixArt-alpha", none, "l2"),
        FamilyInfo("PixArtSigma", "PixArt-sigma", none, "l2", same_as="PixArtAlpha"),
        # T5 and LLM encoders without a start token: every token is the prompt's own.
        # AuraFlow's zeroed pad rows stay zero (see KEEP_ZERO_ROWS).
        FamilyInfo("AuraFlow", "AuraFlow", zero_rows, "l2"),
        FamilyInfo("Lumina2", "Lumina 2", none, "l2"),
        FamilyInfo("ZImage", "Z-Image", none, "l2"),
        FamilyInfo("Chroma", "Chroma", none, "l2", inplace_residuals=True),
        FamilyInfo("HiDream", "HiDream", none, "l2"),
        FamilyInfo("QwenImage", "Qwen-Image", none, "l2"),
        FamilyInfo("CosmosT2IPredict2", "Cosmos Predict2 text-to-image", none, "l2"),
        # Video families: 5-D latents. Wan's umT5 pads to 512 tokens with zero rows (no mask); those rows
        # are the refiner's to rewrite, as CLIP's end-token padding is.
        FamilyInfo("LTXV", "LTX-Video", none, "l2", video=True, spatial_ratio=32, temporal_ratio=8,
                   inplace_residuals=True),
        FamilyInfo("WAN21_T2V", "Wan 2.1 / 2.2 A14B text-to-video", none, "l2", video=True, temporal_ratio=4),
        FamilyInfo("WAN22_T2V", "Wan 2.2 TI2V 5B", none, "l2", video=True, spatial_ratio=16, temporal_ratio=4),
        FamilyInfo("HunyuanVideo15", "HunyuanVideo 1.5", none, "l2", video=True, spatial_ratio=16, temporal_ratio=4,
                   inplace_residuals=True),
    ]
    return {f.name: f for f in rows}


_FAMILIES = _cfg_families()

# Families ComfyUI samples at cfg 1 by design: guidance is distilled into the model already.
_NO_CFG = {
    "Flux": "Flux dev is guidance-distilled: it takes the guidance value as an input (FluxGuidance) and samples at cfg 1",
    "FluxInpaint": "Flux Fill is guidance-distilled: it takes the guidance value as an input and samples at cfg 1",
    "FluxSchnell": "Flux schnell is step-distilled and samples at cfg 1",
    "Flux2": "Flux.2 is guidance-distilled: it takes the guidance value as an input and samples at cfg 1",
    "HunyuanVideo": "HunyuanVideo is guidance-distilled: it takes the guidance value as an input and samples at cfg 1",
    "HunyuanVideoI2V": "HunyuanVideo I2V is guidance-distilled: it takes the guidance value as an input and samples at cfg 1",
    "HunyuanVideo15_SR_Distilled": "the HunyuanVideo 1.5 distilled super-resolution model samples at cfg 1",
    "HunyuanImage21Refiner": "the HunyuanImage 2.1 refiner is guidance-distilled and samples at cfg 1",
}


class UnsupportedFamilyError(ValueError):
    """The model family cannot use DICE: no CFG to distil, or not a text-conditioned family DICE knows."""


def family_info(name: str) -> FamilyInfo:
    """The family's entry, or a sentence saying why DICE does not apply to it."""
    if name in _FAMILIES:
        return _FAMILIES[name]
    if name in _NO_CFG:
        raise UnsupportedFamilyError(
            f"{_NO_CFG[name]}. There is no classifier-free guidance to distil, so DICE does not apply to {name}: "
            "sample it as it is, with no DICE nodes."
        )
    raise UnsupportedFamilyError(
        f"DICE does not support the model family {name}: it is not one of the text-to-image or text-to-video "
        f"families that DICE knows how to train for ({', '.join(sorted(_FAMILIES))})."
    )


def cfg_families() -> list[FamilyInfo]:
    return list(_FAMILIES.values())


def check_same_family(trained_for: str, model_family: str) -> None:
    """A refiner distils one family's CFG; another family's model reads its output as noise.
    Refiners imported from the paper's pickles record no family ("unknown") and are not checked."""
    if trained_for in ("", "unknown") or trained_for == model_family:
        return
    raise ValueError(
        f"this refiner was trained for {_label(trained_for)}, but the MODEL is {_label(model_family)}: "
        f"train a refiner for {_label(model_family)} (DICE Train Refiner), or load the model it was trained for"
    )


def _label(name: str) -> str:
    info = _FAMILIES.get(name)
    return f"{name} ({info.label})" if info and info.label != name else name
