"""World 2's recipe study, on validation only: which refiner recipe make bench's toyworld2 table trains.

Trains one refiner (refiner seed 0, or --seed) with the DICE Train Refiner node on base seed 0's shipped model, as the table does,
and scores it on the validation captions and noise seeds at each strength, so that a recipe is chosen without touching
the test split. The table's validation then picks the strength and the scaling baseline for the recipe chosen here;
trying several recipes inside `make bench` would not fit its 90 minutes (about 20 minutes a refiner here).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python -m benchmarks.toyworld2_recipes --steps 1200 --batch 16 \\
        --captions 256 --samples-per-prompt 2 --json /tmp/recipe.json

Recovery is against the cfg 1 and teacher accuracies the table's validation recorded (results.json,
cpu.toyworld2.validation), the same captions and seeds. With other noise seeds (--noise-seeds), another base model or
fewer captions, the study samples its own cfg 1 and teacher rows, and then gives each recovery a 95% bootstrap interval
over captions, and each strength a teacher match (`toyworld2_table.teacher_match`: how close its images come to the
teacher's own from the same noise, 0 for cfg 1, 1 for the teacher), which orders refiners whose accuracies tie. Several --refiner files
are scored against one sampling of the references, so that their scores are paired and the references cost once.
Noise seeds the validation never used (2 on) score a chosen setting afresh on the validation captions, without
touching the test split. --extrapolate scores a training-free baseline on the same pairs, c + K (c - uc), every
prompt pushed away from the empty prompt's embedding (with --extrapolation-only, alone). BENCHMARKS.md's notes give
the figures and their commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch

from benchmarks import common, run_all, toyworld2_table, toyworld_table
from benchmarks.dial_study import bootstrap_recovery


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0,
                   help=f"the refiner seed (the table trains seeds {' and '.join(map(str, toyworld2_table.REFINER_SEEDS))})")
    p.add_argument("--batch", type=int, default=toyworld2_table.BATCH_SIZE, help="training (and teacher sampling) batch")
    p.add_argument("--loss", default="auto", choices=["auto", "l1", "l2"], help="the node's loss input (auto: the family's)")
    p.add_argument("--lr", type=float, default=0.0, help="the node's learning rate (0: the recipe's)")
    p.add_argument("--stages", default="", help="timestep stage edges as the node takes them, e.g. '0.08, 0.24, 0.5'")
    p.add_argument("--captions", type=int, default=toyworld2_table.REFINER_CAPTIONS, help="training prompts")
    p.add_argument("--samples-per-prompt", type=int, default=toyworld2_table.SAMPLES_PER_PROMPT)
    p.add_argument("--train-w", type=float, default=toyworld2_table.TEACHER_W,
                   help="the cfg of the teacher's training targets; recovery stays against the table's teacher, cfg 3")
    p.add_argument("--strengths", nargs="+", default=["1", "1.25", "1.5", "2"],
                   help="strengths, or schedules early>late@percent (e.g. 1>2@0.3: 1, then 2 from 30%% of the sampling on)")
    p.add_argument("--refiner", nargs="+",
                   help="score this refiner file instead of training one (e.g. the shipped one); several files are scored "
                        "against the same references, each score named FILE|STRENGTH")
    p.add_argument("--validation-captions", type=int, default=0, help="only the first N (0: all 102); for quick checks")
    p.add_argument("--noise-seeds", type=int, nargs="+",
                   help="the validation captions' noise seeds; default the table's validation's (0 and 1)")
    p.add_argument("--extrapolate", type=float, nargs="+", default=[],
                   help="also score the training-free baseline c + K (c - uc) at each K: every prompt embedding pushed "
                        "away from the empty prompt's, scored like a strength (label 'extrapolate K')")
    p.add_argument("--extrapolation-only", action="store_true",
                   help="score only the --extrapolate rows: train and load no refiner")
    p.add_argument("--base-index", type=int, default=0, help="which shipped base model (comfy_objects.world2_base_paths)")
    p.add_argument("--save", help="also save the refiner here")
    p.add_argument("--json", help="write the scores here, after each strength")
    a = p.parse_args(argv)
    if a.refiner and a.save:
        p.error("--save saves the refiner this study trains, and --refiner trains none")
    if a.extrapolation_only and (a.refiner or a.save or not a.extrapolate):
        p.error("--extrapolation-only scores the --extrapolate rows alone: give --extrapolate, and no --refiner or --save")
    nodes_map = toyworld_table.setup()
    from toyworld import comfy_objects, world2

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from toyworld.train_base import _sha256

    base_path = comfy_objects.world2_base_paths()[a.base_index]
    model, clip, _ = comfy_objects.load_toy_world2(base_path)
    if a.extrapolation_only:
        bundles, seconds = {}, None
    elif a.refiner:
        from dice_core.fileformat import load_refiner
        bundles, seconds = {path: load_refiner(path) for path in a.refiner}, None
    else:
        stage_field = [":" + "/".join(a.stages.replace(",", " ").split())] if a.stages.strip() else []
        candidate = "".join([f"dice-pack:{a.steps}", *stage_field, f":b{a.batch}"])
        settings = dataclasses.replace(toyworld2_table.node_settings(candidate, a.seed, a.samples_per_prompt, a.train_w),
                                       loss=a.loss, lr=a.lr)
        bundle, _, seconds = toyworld_table.train_refiner_with_node(nodes_map, model, clip, world2.refiner_captions(a.captions), settings)
        bundles = {"trained": bundle}
    if a.save:
        from dice_core.fileformat import save_refiner
        save_refiner(a.save, bundles["trained"], include_optimizer=False)
    table = run_all.read_results()["cpu"]["toyworld2"]
    table_seeds = list(range(table["settings"]["validation_seeds"]))
    noise_seeds = table_seeds if a.noise_seeds is None else a.noise_seeds
    val = toyworld2_table.Sampler(model, clip, world2.VALIDATION_CAPTIONS[:a.validation_captions or None], noise_seeds)
    reference = table["validation"]
    rows = {}  # the references' per-image tensors, where they are measured here
    if reference["base_sha256"] != _sha256(base_path) or a.validation_captions or noise_seeds != table_seeds:
        # not the table's validation base model, captions or noise seeds: its cfg 1 and teacher rows are measured here
        rows = {"cfg1": val.run(1.0), "cfg_w": val.run(toyworld2_table.TEACHER_W)}
        reference = {name: row["accuracy"] for name, row in rows.items()}
        print(f"validation references: {json.dumps(reference)}", flush=True)
    refine_node = nodes_map["DiceRefineConditioning"]
    result = {"settings": vars(a), "train_s": seconds, "references": reference, "scores": {}}
    runs = [(f"{path}|{strength}" if len(bundles) > 1 else strength,
             toyworld2_table.refine_with(refine_node, bundles[path], strength)) for path in bundles for strength in a.strengths]
    if a.extrapolate:
        uc = toyworld2_table.empty_prompt(clip)
        runs += [(f"extrapolate {k:g}", toyworld2_table.extrapolation(k, uc)) for k in a.extrapolate]
    for label, transform in runs:
        row = val.run(1.0, transform)
        score = result["scores"][label] = {
            "accuracy": row["accuracy"], "binding": row["binding"], "frechet": row["frechet"], "diversity": row["diversity"],
            "recovery": toyworld2_table.recovery(row["accuracy"], reference["cfg1"], reference["cfg_w"])}
        if rows:
            score["recovery_ci95"] = bootstrap_recovery(row["correct"], rows["cfg1"]["correct"], rows["cfg_w"]["correct"])
            matched = toyworld2_table.with_teacher_match(row, rows["cfg1"], rows["cfg_w"])
            score["teacher_match"], score["teacher_match_ci95"] = matched["teacher_match"], matched["teacher_match_ci95"]
        print(f"strength {label}: {json.dumps(score)}", flush=True)
        common.write_json(result, a.json)
    return result


if __name__ == "__main__":
    main()
