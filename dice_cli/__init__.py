"""Headless DICE trainer for ComfyUI checkpoints: `python -m dice_cli train ...`, and on several GPUs
`torchrun --nproc_per_node N -m dice_cli train ...`. It trains with the node's own code
(dice_comfy.session.run_training and dice_core) and writes the same refiner files."""


def main(argv=None) -> int:
    from .cli import main as _main

    return _main(argv)
