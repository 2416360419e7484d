"""Everything of ComfyUI-DICE that touches ComfyUI but is not a node (docs/architecture.md):

- `setup`: find ComfyUI and import it headless (the CLI, the toy world's scripts, the tests, the benchmarks);
- `internals`: every private ComfyUI API the pack relies on, in one module;
- `bridge`: ComfyUI objects (MODEL, CLIP, CONDITIONING) to and from dice_core (the `Denoiser`);
- `session`: one training run on a ComfyUI model, shared by the Train node and the CLI;
- `conditioning`: CONDITIONING in and out of a refiner (refine, the training prompts and their uc);
- `progress`: a training run's events as ComfyUI progress bars and checkpoint saves;
- `paths`: the models/dice folder, refiner files and prompt files;
- `fast_path`: the check that a sampling run keeps ComfyUI's cfg=1 fast path.

Imported by its own name everywhere (the nodes, the CLI, the tests), so each module exists once per process.
Importing this package imports nothing of ComfyUI; `setup` must run before the other modules outside ComfyUI.
"""
