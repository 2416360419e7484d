"""Where the pack's nodes appear in ComfyUI's node library: their categories and search aliases, as core's nodes
set them (core's TrainLoraNode and LossGraphNode sit in a `training` category; many core nodes list
`search_aliases`, the words users type that are not in the node's name)."""

from __future__ import annotations

import dataclasses

from comfy_api.v0_0_2 import io

# Using, saving and loading a refiner: one folder for the pack inside core's conditioning.
CATEGORY = "conditioning/DICE"
# Training goes where core's training nodes are (TrainLoraNode, LossGraphNode: `training` on 0.3.75), so that a user
# looking for how to train finds DICE beside Train LoRA. Its display name already says DICE.
TRAINING_CATEGORY = "training"

# ComfyUI 0.33's io.Schema has a search_aliases field (sent to the frontend, whose search matches it); 0.3.75's has
# not, and a Schema given an unknown keyword raises TypeError. So the aliases go in only where the field exists.
SCHEMA_HAS_SEARCH_ALIASES = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}


def placement(category: str, search_aliases: list[str]) -> dict:
    """io.Schema keywords for a node's place in the library: its category, and its search aliases on runtimes whose
    schema takes them."""
    found = {"category": category}
    if SCHEMA_HAS_SEARCH_ALIASES:
        found["search_aliases"] = list(search_aliases)
    return found
