"""World 2's recipe study, on validation only: which refiner recipe make bench's toyworld2 table trains.

Trains one refiner (refiner seed 0) with the DICE Train Refiner node on base seed 0's shipped model, as the table does,
and scores it on the validation captions and noise seeds at each strength, so that a recipe is chosen without touching
the test split. The table's validation then picks the strength and the scaling baseline for the recipe chosen here;
trying several recipes inside `make bench` would not fit its 90 minutes (about 20 minutes a refiner here).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python -m benchmarks.toyworld2_recipes --steps 1200 --batch 16 \\
        --captions 256 --samples-per-prompt 2 --json /tmp/recipe.json

Recovery is against the cfg 1 and teacher accuracies the table's validation recorded (results.json,
cpu.toyworld2.validation), the same captions and seeds. BENCHMARKS.md's notes give the figures and their commands.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from benchmarks import common, run_all, toyworld2_table, toyworld_table


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=toyworld2_table.BATCH_SIZE, help="training (and teacher sampling) batch")
    p.add_argument("--stages", default="", help="timestep stage edges as the node takes them, e.g. '0.08, 0.24, 0.5'")
    p.add_argument("--captions", type=int, default=toyworld2_table.REFINER_CAPTIONS, help="training prompts")
    p.add_argument("--samples-per-prompt", type=int, default=toyworld2_table.SAMPLES_PER_PROMPT)
    p.add_argument("--strengths", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0])
    p.add_argument("--validation-captions", type=int, default=0, help="only the first N (0: all 102); for quick checks")
    p.add_argument("--json", help="write the scores here, after each strength")
    a = p.parse_args(argv)
    nodes_map = toyworld_table.setup()
    from toyworld import comfy_objects, world2

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, clip, _ = comfy_objects.load_toy_world2(comfy_objects.world2_base_paths()[0])
    settings = toyworld_table.NodeSettings(
        steps=a.steps, seed=0, batch_size=a.batch, lr=0.0, samples_per_prompt=a.samples_per_prompt, recipe="dice-pack",
        image_px=toyworld2_table.IMAGE_PX, timestep_stages=a.stages, guidance_scale=toyworld2_table.TEACHER_W)
    bundle, _, seconds = toyworld_table.train_refiner_with_node(nodes_map, model, clip, world2.refiner_captions(a.captions), settings)
    reference = run_all.read_results()["cpu"]["toyworld2"]["validation"]
    val = toyworld2_table.Sampler(model, clip, world2.VALIDATION_CAPTIONS[:a.validation_captions or None], range(2))
    refine_node = nodes_map["DiceRefineConditioning"]
    result = {"settings": vars(a), "train_s": seconds, "scores": {}}
    for strength in a.strengths:
        row = val.run(1.0, toyworld2_table.refine_with(refine_node, bundle, strength))
        result["scores"][f"{strength:g}"] = {
            "accuracy": row["accuracy"], "binding": row["binding"], "frechet": row["frechet"], "diversity": row["diversity"],
            "recovery": toyworld2_table.recovery(row["accuracy"], reference["cfg1"], reference["cfg_w"])}
        print(f"strength {strength:g}: {json.dumps(result['scores'][f'{strength:g}'])}", flush=True)
        common.write_json(result, a.json)
    return result


if __name__ == "__main__":
    main()
