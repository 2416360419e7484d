"""DICE Fast-Path Check: an optional node that warns when a sampling run would cancel DICE's speed-up
(the check itself, and why it rides on a MODEL clone, is in dice_comfy/fast_path.py)."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from dice_comfy.fast_path import with_fast_path_check

from .library import CATEGORY, placement


class DiceFastPathCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiceFastPathCheck",
            display_name="DICE Fast-Path Check",
            **placement(CATEGORY, ["fast path", "cfg 1 speed check", "slow sampling"]),
            description="Optional. Put it between the checkpoint loader and the KSampler that samples DICE-refined "
            "conditioning: it logs a warning in the console when that sampling run cannot get DICE's speed-up (cfg "
            "above 1.0, or a node such as Self-Attention Guidance that turns off ComfyUI's cfg=1 optimization). It "
            "changes nothing else: same images, same speed.",
            inputs=[
                io.Model.Input("model", tooltip="The model the KSampler uses; a checked copy is returned, this one is "
                               "not modified."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The same model, checked at every sampling run.")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        return io.NodeOutput(with_fast_path_check(model))
