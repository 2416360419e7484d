"""ComfyUI adapters for dice_core. Each node only translates ComfyUI types to and from dice_core."""

from comfy_api.latest import ComfyExtension, io

from .fast_path_check import DiceFastPathCheck
from .paths import register_dice_folder
from .refiner_nodes import DiceLoadRefiner, DiceRefineConditioning, DiceSaveRefiner
from .toyworld_node import DiceToyWorldLoader
from .train_node import DiceTrainRefiner

NODES: list[type[io.ComfyNode]] = [
    DiceLoadRefiner, DiceSaveRefiner, DiceRefineConditioning, DiceTrainRefiner, DiceToyWorldLoader, DiceFastPathCheck,
]


class DiceExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_dice_folder()
        return NODES


async def comfy_entrypoint() -> DiceExtension:
    return DiceExtension()
