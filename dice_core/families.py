"""What DICE needs to know about each model family, keyed by ComfyUI's model-config class name.

Kept pure (no ComfyUI import): the node layer passes in `type(model.model_config).__name__`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .refiner import KEEP_CLIP_CHUNK_START, KEEP_NONE


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    keep_rule: str
    default_loss: str  # the paper's choice where it made one: L1 on SD1.5, L2 on SDXL
    pad_to: int | None  # fixed token count for encoders without padding (T5); None keeps lengths
    tested: bool  # exercised by this project's tests on tiny models of that architecture


# CLIP families (start token per 77-token chunk, padded to 77) and T5 families (no start, no padding).
_FAMILIES = {
    "SD15": FamilyInfo("SD15", KEEP_CLIP_CHUNK_START, "l1", None, True),
    "SD20": FamilyInfo("SD20", KEEP_CLIP_CHUNK_START, "l1", None, False),
    "SD21UnclipL": FamilyInfo("SD21UnclipL", KEEP_CLIP_CHUNK_START, "l1", None, False),
    "SD21UnclipH": FamilyInfo("SD21UnclipH", KEEP_CLIP_CHUNK_START, "l1", None, False),
    "SDXL": FamilyInfo("SDXL", KEEP_CLIP_CHUNK_START, "l2", None, True),
    "SDXLRefiner": FamilyInfo("SDXLRefiner", KEEP_CLIP_CHUNK_START, "l2", None, False),
    "SSD1B": FamilyInfo("SSD1B", KEEP_CLIP_CHUNK_START, "l2", None, False),
    "Segmind_Vega": FamilyInfo("Segmind_Vega", KEEP_CLIP_CHUNK_START, "l2", None, False),
    "KOALA_700M": FamilyInfo("KOALA_700M", KEEP_CLIP_CHUNK_START, "l2", None, False),
    "KOALA_1B": FamilyInfo("KOALA_1B", KEEP_CLIP_CHUNK_START, "l2", None, False),
    # PixArt-alpha was trained on T5 embeddings padded to 120 tokens.
    "PixArtAlpha": FamilyInfo("PixArtAlpha", KEEP_NONE, "l2", 120, True),
    "PixArtSigma": FamilyInfo("PixArtSigma", KEEP_NONE, "l2", 300, False),
}


def family_info(name: str, num_tokens: int | None = None) -> FamilyInfo:
    """Known families get their table entry; unknown ones a rule inferred from the token layout."""
    if name in _FAMILIES:
        return _FAMILIES[name]
    clip_like = num_tokens is not None and num_tokens > 0 and num_tokens % 77 == 0
    if clip_like:
        return FamilyInfo(name, KEEP_CLIP_CHUNK_START, "l2", None, False)
    # An encoder without fixed padding: pad to a fixed length so the refiner has pads to sharpen.
    return FamilyInfo(name, KEEP_NONE, "l2", 128, False)


def known_families() -> list[FamilyInfo]:
    return list(_FAMILIES.values())
