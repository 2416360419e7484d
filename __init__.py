"""ComfyUI-DICE: distil classifier-free guidance into the text embedding (Zhou et al., AAAI 2026).

ComfyUI loads this package from custom_nodes/ and calls comfy_entrypoint().
"""

import importlib.util
import os
import sys

# The pack's packages (dice_core, dice_comfy, toyworld) are imported by their own names, as the command-line
# trainer and the tests import them, so each module exists once and there is one RefinerBundle class everywhere.
# The folder goes last on sys.path: ComfyUI's own top-level `nodes` must win over this pack's nodes/.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

# The frontend loads web/**/*.js (the Save node's message on the node) and shows web/docs/<Node>.md as each node's help page.
WEB_DIRECTORY = "./web"

# Outside ComfyUI (pytest imports this file because the repo root is a package) there is nothing to register.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401  (relative: ComfyUI has its own top-level `nodes`)
