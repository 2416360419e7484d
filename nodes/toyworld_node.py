"""DICE Toy World Loader: the pack's small demo model (toyworld/), for trying DICE on any machine.

It returns a real ComfyUI MODEL (an SD1.5-family UNet trained on 16x16 coloured shapes), a CLIP
that encodes captions like "a red square on the left", and a VAE that maps latents to pixels.
"""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from .library import CATEGORY, placement


class DiceToyWorldLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiceToyWorldLoader",
            display_name="DICE Toy World Loader (demo model)",
            **placement(CATEGORY, ["toy model", "tiny model", "example model"]),  # "demo model" is in its name
            description="Loads the pack's tiny demo diffusion model: coloured shapes at 16x16 latent pixels. Prompts look "
            "like 'a red square on the left' (colours red green blue yellow magenta cyan; shapes cross square triangle; "
            "positions left right top bottom). Use a 128x128 Empty Latent Image.",
            inputs=[],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The toy base model (SD1.5 family, context dim 64)."),
                io.Clip.Output(display_name="CLIP", tooltip="The toy text encoder (16 tokens: start, words, end, padding)."),
                io.Vae.Output(display_name="VAE", tooltip="Exact linear latent <-> RGB map, 8x upscaled."),
            ],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        from toyworld.comfy_objects import load_toy_world

        return io.NodeOutput(*load_toy_world())
