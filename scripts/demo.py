"""`make demo`: DICE proven on the toy world, then the example workflows run on a real ComfyUI server.

1. Trains a DICE refiner with the DICE Train Refiner node on the shipped toy base model and scores
   held-out prompts exactly (cfg=1, cfg=3, cfg=5, the scaling baseline, DICE): demo_out/table.md,
   demo_out/results.json and the comparison grid demo_out/grid.png (rows: prompts; columns:
   cfg=1 | cfg=5 | DICE at cfg=1).
2. Starts a headless ComfyUI (main.py --cpu) with the pack installed as a user installs it, and
   queues the example workflows workflows/api/dice_apply.json and dice_compare.json with the
   checkpoint loader swapped for the toy-world loader: demo_out/apply_workflow.png and
   demo_out/compare_workflow.png (cfg=5 | DICE at cfg=1 from the same seed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "demo_out")
PROMPT = "a blue square at the bottom"  # a held-out combination: the base model never saw it in training


def toy_workflow(name: str, refiner_file: str, seed: int) -> dict:
    """An example API workflow with its checkpoint loader replaced by the toy-world loader."""
    with open(os.path.join(REPO, "workflows", "api", name)) as f:
        prompt = json.load(f)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            node["class_type"], node["inputs"] = "DiceToyWorldLoader", {}
        elif kind == "DiceLoadRefiner":
            inputs["refiner_name"] = refiner_file
        elif kind == "CLIPTextEncode" and inputs.get("text"):
            inputs["text"] = PROMPT
        elif kind == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = 128
        elif kind == "KSampler":
            inputs["seed"] = seed
        elif kind == "SaveImage":
            inputs["filename_prefix"] = "demo/" + name.removesuffix(".json")
    return prompt


def run_workflows(refiner_path: str) -> list[str]:
    from dice_testkit.comfy_server import ComfyServer

    written = []
    with tempfile.TemporaryDirectory(prefix="dice-demo-") as base:
        with ComfyServer(base) as server:
            shutil.copy(refiner_path, server.path("models", "dice", "demo_toyworld.safetensors"))
            for name, out_name in (("dice_apply.json", "apply_workflow.png"), ("dice_compare.json", "compare_workflow.png")):
                t0 = time.time()
                entry = server.run(toy_workflow(name, "demo_toyworld.safetensors", seed=3), timeout=300)
                images = [img for o in entry["outputs"].values() for img in o.get("images", []) if img["type"] == "output"]
                src = server.path("output", images[0]["subfolder"], images[0]["filename"])
                shutil.copy(src, os.path.join(OUT, out_name))
                written.append(out_name)
                print(f"server ran workflows/api/{name} (toy loader, prompt {PROMPT!r}) in {time.time() - t0:.1f}s "
                      f"-> demo_out/{out_name}", flush=True)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600, help="refiner training steps (a few minutes on 2 CPU cores)")
    ap.add_argument("--eval-seeds", type=int, default=10, help="noise seeds per held-out prompt (18 prompts)")
    ap.add_argument("--skip-server", action="store_true")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    from benchmarks import toyworld_table

    refiner = os.path.join(OUT, "toyworld_refiner.safetensors")
    toyworld_table.main([
        "--steps", str(a.steps), "--refiner-seeds", "0", "--eval-seeds", str(a.eval_seeds), "--sweep-seeds", "5",
        "--json", os.path.join(OUT, "results.json"), "--md", os.path.join(OUT, "table.md"),
        "--grid", os.path.join(OUT, "grid.png"), "--save-refiner", refiner,
    ])
    if not a.skip_server:
        run_workflows(refiner)
    print(f"\nwrote {OUT}/: grid.png, table.md, results.json, toyworld_refiner.safetensors"
          + ("" if a.skip_server else ", apply_workflow.png, compare_workflow.png"))


if __name__ == "__main__":
    main()
