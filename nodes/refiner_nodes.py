"""DICE Load Refiner, DICE Save Refiner and DICE Refine Conditioning (V3 schema)."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from dice_comfy.conditioning import refine_conditioning
from dice_comfy.paths import load_refiner_file, refiner_files, save_refiner_file
from dice_core.fileformat import RefinerBundle
from dice_core.refiner import StrengthSchedule

from .library import CATEGORY, placement

DiceRefiner = io.Custom("DICE_REFINER")


class DiceLoadRefiner(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiceLoadRefiner",
            display_name="DICE Load Refiner",
            **placement(CATEGORY, ["load sharpener", "refiner loader"]),
            description="Loads a DICE refiner (.safetensors) from models/dice. A refiner is trained for one checkpoint "
            "family; its file records which.",
            inputs=[
                io.Combo.Input(
                    "refiner_name",
                    options=refiner_files(),
                    tooltip="Refiner file in models/dice. Train one with DICE Train Refiner and save it with DICE Save Refiner.",
                ),
            ],
            outputs=[DiceRefiner.Output(display_name="refiner", tooltip="The refiner, for DICE Refine Conditioning.")],
        )

    @classmethod
    def execute(cls, refiner_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_refiner_file(refiner_name))


class DiceSaveRefiner(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiceSaveRefiner",
            display_name="DICE Save Refiner",
            **placement(CATEGORY, ["export refiner", "save sharpener"]),
            description="Saves a refiner to models/dice/<prefix>_NNNNN.safetensors (atomic write), with metadata "
            "about the model family and training recipe.",
            is_output_node=True,
            inputs=[
                DiceRefiner.Input("refiner", tooltip="The refiner to save, usually from DICE Train Refiner."),
                io.String.Input(
                    "filename_prefix",
                    default="dice_refiner",
                    tooltip="File name prefix inside models/dice; sub-folders allowed (e.g. sdxl/my_refiner).",
                ),
                io.Boolean.Input(
                    "keep_optimizer_state",
                    default=True,
                    tooltip="Also store the optimizer state so training can resume exactly from this file "
                    "(makes the file about 3x larger).",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, refiner: RefinerBundle, filename_prefix: str, keep_optimizer_state: bool = True) -> io.NodeOutput:
        saved = save_refiner_file(refiner, filename_prefix, keep_optimizer_state)
        return io.NodeOutput(ui={"text": [f"saved {saved}"]})


class DiceRefineConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiceRefineConditioning",
            display_name="DICE Refine Conditioning",
            **placement(CATEGORY, ["refine prompt", "sharpener", "fast cfg", "distilled guidance", "apply refiner"]),
            description="Rewrites the prompt embedding with a DICE refiner (c' = c + strength * R(c, uc)) so that "
            "KSampler at cfg 1.0 gives CFG-like images with one model pass per step instead of two.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Prompt conditioning from CLIP Text Encode."),
                DiceRefiner.Input("refiner", tooltip="A refiner trained for this checkpoint (DICE Load Refiner)."),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=3.0,
                    step=0.05,
                    tooltip="alpha in c' = c + alpha*R(c, uc). 1.0 reproduces the guidance the refiner was trained for, lower "
                    "gives less; above about 1.5 images get worse, not more guided (measured). 0 returns the prompt exactly as "
                    "it came in. The refined prompt keeps its token "
                    "count (only an older PixArt refiner file saved with a pad length pads it first).",
                ),
                io.Conditioning.Input(
                    "negative",
                    optional=True,
                    tooltip="Optional negative prompt used as uc. If unconnected, the empty-prompt embedding stored in "
                    "the refiner file is used. Sample with cfg 1.0: the negative is not passed to KSampler.",
                ),
                io.Model.Input(
                    "model",
                    optional=True,
                    tooltip="Optional: the MODEL you sample with, after its LoRA loaders. Connected, it is only read, to "
                    "check that the refiner was trained for this model family (an SDXL refiner on AuraFlow, both 2048 wide, "
                    "would otherwise pass unnoticed), that the family uses CFG at all (Flux does not), and that it is the "
                    "checkpoint and LoRAs the refiner was trained on (a console warning if not: a LoRA added after "
                    "training measured clearly worse).",
                ),
                io.Float.Input(
                    "guidance_scale",
                    default=0.0,
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    optional=True,
                    tooltip="The guidance dial, in cfg units: the CFG scale the refined prompt should reproduce at cfg 1.0. "
                    "0 is the scale the refiner was trained for. A dial refiner (trained with a guidance range) follows it "
                    "inside its range; a single-scale refiner can only scale its change, which falls short above the "
                    "trained scale (a warning says so).",
                ),
                io.Float.Input(
                    "late_strength",
                    default=1.0,
                    min=0.0,
                    max=3.0,
                    step=0.05,
                    optional=True,
                    tooltip="The strength from late_from to the end of sampling; strength applies before. The refined "
                    "prompt becomes two entries with start_percent/end_percent, as Conditioning (Set Timestep Range) "
                    "makes them, so KSampler still runs one model pass per step. Measured in toy world 2 (BENCHMARKS.md): "
                    "weak early and strong late steps bound attributes better than any single strength.",
                ),
                io.Float.Input(
                    "late_from",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    optional=True,
                    tooltip="Where late_strength takes over, as a share of the sampling (0 is the first step, 1 the end, "
                    "as in Conditioning (Set Timestep Range)). 1.0 keeps one strength throughout, the paper's way.",
                ),
            ],
            outputs=[io.Conditioning.Output(display_name="refined", tooltip="Refined prompt; use with KSampler at cfg 1.0.")],
        )

    @classmethod
    def execute(cls, positive, refiner: RefinerBundle, strength: float = 1.0, negative=None, model=None,
                guidance_scale: float = 0.0, late_strength: float = 1.0, late_from: float = 1.0) -> io.NodeOutput:
        schedule = StrengthSchedule(strength, late_strength, late_from)
        return io.NodeOutput(refine_conditioning(refiner, positive, negative, schedule, model, guidance_scale))
