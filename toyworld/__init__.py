"""Synthetic toy world for DICE: exact text-image alignment scoring with a tiny SD1.5-family model.

`world` and `text_encoder` are pure torch; `comfy_objects`, `train_base` and `evaluate` need
ComfyUI importable (dice_comfy.setup does that for the scripts). See toyworld/README.md.
"""
