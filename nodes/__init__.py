"""The pack's ComfyUI nodes: thin adapters that translate ComfyUI's inputs for dice_comfy and dice_core."""

# A versioned API, as ComfyUI asks of packs: `latest` may change under a pack, v0_0_2 stays. It is the newest
# version that both supported runtimes ship (0.3.75 and 0.33.0 have v0_0_1 and v0_0_2).
from comfy_api.v0_0_2 import ComfyExtension, io
from typing_extensions import override

from dice_comfy.paths import register_dice_folder
from toyworld.comfy_objects import register_toy_lora_folder

from .fast_path_check import DiceFastPathCheck
from .refiner_nodes import DiceLoadRefiner, DiceRefineConditioning, DiceSaveRefiner
from .toyworld_node import DiceToyWorldLoader
from .train_node import DiceTrainRefiner

NODES: list[type[io.ComfyNode]] = [
    DiceLoadRefiner, DiceSaveRefiner, DiceRefineConditioning, DiceTrainRefiner, DiceToyWorldLoader, DiceFastPathCheck,
]


class DiceExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_dice_folder()
        register_toy_lora_folder()
        return NODES


async def comfy_entrypoint() -> DiceExtension:
    return DiceExtension()
