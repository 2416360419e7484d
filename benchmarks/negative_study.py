"""Do negative prompts work with DICE? The paper's way against negative-aware training (issue 14).

The toy world's captions name a colour, a shape and a position. A caption that leaves the colour out
("a square on the left") lets the model pick one, so a colour named in the negative prompt has something
to remove: the measure is the rate at which images show the colour the negative names, over the six
colours as negatives. Methods, each on the same noise:
- cfg=1 (the negative has no effect: ComfyUI skips the uncond pass), cfg=5 with the negative as uc, and cfg=5
  with the empty negative (the rate with no negative at all);
- DICE trained the paper's way (empty uc only), refined with the negative as uc, and without a negative;
- DICE negative-aware: DICE Train Refiner's negative_prompts lists the six colours, so each training prompt is
  paired with each colour and with the empty prompt and the teacher guides each pair with its own negative.
Both refiners are trained by the node (batch 32, cfg 5) and the training prompts are the 54 training captions
plus half of the 12 colour-free captions; the other 6 colour-free captions are the evaluation prompts, so they
never reach training. The paper-way refiner has the table's settings (600 steps, 8 teacher samples per
prompt). The negative-aware one's teacher samples per (prompt, negative) pair and steps are chosen among
--candidates on the validation seeds, by both goals below (goal_shortfall); the test seeds, disjoint, are
sampled once, with the chosen refiner.

Goals (issue 14): negative-aware DICE's rate <= cfg=5-with-negative's + 0.02, and its alignment on the
attributes the prompt does specify (shape and position) within 0.03 of paper-way DICE's without a negative.
95% intervals: bootstrap over the 36 (prompt, negative) cells.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.negative_study [--steps 600] [--seeds 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import torch

from benchmarks import common

TEACHER_W = 5.0


def colour_free_captions():
    """(caption, shape index, position index) for every shape and position, the colour left out."""
    from toyworld import world

    return [(f"a {shape} {world.POSITION_PHRASES[pos]}", si, pi)
            for si, shape in enumerate(world.SHAPES) for pi, pos in enumerate(world.POSITIONS)]


def split_captions():
    """Training gets the colour-free captions whose shape + position is even, evaluation the odd ones."""
    rows = colour_free_captions()
    return [r for r in rows if (r[1] + r[2]) % 2 == 0], [r for r in rows if (r[1] + r[2]) % 2 == 1]


def bootstrap_mean(cells: torch.Tensor, draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean of per-cell values, resampling cells."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(cells), (draws, len(cells)), generator=g)
    means = cells.double()[picks].mean(1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))


RATE_MARGIN, ALIGNMENT_MARGIN = 0.02, 0.03  # the goals: rate <= cfg 5's + 0.02, alignment >= paper-way DICE's - 0.03


def goal_shortfall(candidate: dict, cfg_with_negative: dict, paper_without_negative: dict) -> tuple:
    """How far a negative-aware candidate's validation means ({"shows", "aligned"}) fall short of the two goals
    together (0: both met); ties go to the lower rate, then to the higher alignment."""
    rate_excess = candidate["shows"] - cfg_with_negative["shows"] - RATE_MARGIN
    alignment_deficit = paper_without_negative["aligned"] - ALIGNMENT_MARGIN - candidate["aligned"]
    return max(0.0, rate_excess) + max(0.0, alignment_deficit), candidate["shows"], -candidate["aligned"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seeds", type=int, default=10, help="test noise seeds per (prompt, negative) cell")
    p.add_argument("--validation-seeds", type=int, default=5)
    p.add_argument("--candidates", nargs="+", default=["2x600", "4x1200"], metavar="SAMPLESxSTEPS",
                   help="negative-aware settings to choose from on validation: teacher samples per pair x steps")
    p.add_argument("--json")
    a = p.parse_args(argv)

    from benchmarks import toyworld_table

    nodes_map = toyworld_table.setup()
    import comfy.utils

    import nodes
    from toyworld import world
    from toyworld.comfy_objects import load_toy_world

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model, clip, _ = load_toy_world()
    encode_node = nodes.CLIPTextEncode()

    def encode(text: str) -> list:
        return encode_node.encode(clip, text)[0]

    train_free, eval_rows = split_captions()
    negatives = list(world.COLOURS)
    # Disjoint from each other and from every seed the table and the dial study use.
    split_seeds = {"validation": list(range(2000, 2000 + a.validation_seeds)), "test": list(range(1000, 1000 + a.seeds))}
    t0 = time.time()
    captions = world.TRAIN_CAPTIONS + [r[0] for r in train_free]

    def train(negative_prompts: str, samples: int, steps: int) -> dict:
        settings = toyworld_table.NodeSettings(steps=steps, seed=0, batch_size=32, lr=0.0, samples_per_prompt=samples,
                                               negative_prompts=negative_prompts)
        bundle, _, seconds = toyworld_table.train_refiner_with_node(nodes_map, model, clip, captions, settings)
        run = {"bundle": bundle, "train_s": seconds, "steps": steps, "samples_per_pair": samples,
               "teacher_trajectories": len(captions) * samples * (1 + len(bundle.recipe["negative_prompts"]))}
        print(json.dumps({k: v for k, v in run.items() if k != "bundle"}), flush=True)
        return run

    trained = {"paper": train("", 8, a.steps)}
    candidates = [tuple(int(v) for v in c.split("x")) for c in a.candidates]
    aware_runs = {f"{n}x{steps}": train("\n".join(negatives), n, steps) for n, steps in candidates}
    refine = nodes_map["DiceRefineConditioning"]

    # Cells: every evaluation prompt with every negative, prompt-major; one KSampler batch per seed.
    cells = [(row, k) for row in eval_rows for k in range(len(negatives))]
    prompt_cond = {r[0]: encode(r[0]) for r in eval_rows}
    negative_cond = [encode(n) for n in negatives]
    empty = encode("")

    def stack(conds: list) -> list:
        return [[torch.cat([c[0][0] for c in conds]), {"pooled_output": torch.cat([c[0][1]["pooled_output"] for c in conds])}]]

    def sample(cfg: float, positives: list, negs: list, seeds: list[int]) -> torch.Tensor:
        """Analysed colour, shape and position of each (cell, seed): (cells, seeds, 3)."""
        positive, negative = stack(positives), stack(negs)
        latent = {"samples": torch.zeros(len(positives), world.LATENT_CHANNELS, world.RES, world.RES),
                  "batch_index": [0] * len(positives)}
        out = []
        old = comfy.utils.PROGRESS_BAR_ENABLED
        comfy.utils.PROGRESS_BAR_ENABLED = False
        try:
            for seed in seeds:
                with torch.inference_mode():
                    lat = nodes.common_ksampler(model, seed, 20, cfg, "euler", "normal", positive, negative, latent)[0]["samples"]
                found = world.analyse(world.latent_to_rgb(lat.float()))
                out.append(torch.stack([found["colour"], found["shape"], found["position"]], -1))
        finally:
            comfy.utils.PROGRESS_BAR_ENABLED = old
        return torch.stack(out, 1)

    def dice(bundle, with_negative: bool) -> list:
        # The paper-way refiner's warning about a negative it was not trained for would repeat once per cell.
        quiet = logging.getLogger("ComfyUI-DICE")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            return _refine_cells(bundle, with_negative)
        finally:
            quiet.setLevel(level)

    def _refine_cells(bundle, with_negative: bool) -> list:
        with torch.inference_mode():
            return [refine.execute(prompt_cond[row[0]], bundle, 1.0, negative_cond[k] if with_negative else None).args[0]
                    for row, k in cells]

    plain_prompts = [prompt_cond[row[0]] for row, _ in cells]
    named = torch.tensor([k for _, k in cells])[:, None]
    shape_pos = torch.tensor([[row[1], row[2]] for row, _ in cells])[:, None, :]

    def score(cfg: float, positives: list, negs: list, seeds: list[int]) -> dict:
        found = sample(cfg, positives, negs, seeds)
        return {"shows": (found[..., 0] == named).float().mean(1),  # per cell: the rate of the colour its negative names
                "aligned": (found[..., 1:] == shape_pos).all(-1).float().mean(1)}

    # Validation scores each candidate against both goals, on the validation seeds: its named-colour rate against
    # cfg 5's with the negative, and its shape-and-position accuracy against paper-way DICE's without a negative.
    # (Choosing on the rate alone once tied two candidates whose accuracies then differed by 0.07 on test.)
    def validation_means(cfg: float, positives: list, negs: list) -> dict:
        v = score(cfg, positives, negs, split_seeds["validation"])
        return {"shows": float(v["shows"].mean()), "aligned": float(v["aligned"].mean())}

    validation = {"cfg=5, negative as uc": validation_means(TEACHER_W, plain_prompts, [negative_cond[k] for _, k in cells]),
                  "DICE paper-way, no negative": validation_means(1.0, dice(trained["paper"]["bundle"], False),
                                                                  [empty] * len(cells))}
    for key, run in aware_runs.items():
        validation[key] = validation_means(1.0, dice(run["bundle"], True), [empty] * len(cells))
    chosen = min(aware_runs, key=lambda k: goal_shortfall(validation[k], validation["cfg=5, negative as uc"],
                                                         validation["DICE paper-way, no negative"]))
    trained["negative-aware"] = aware_runs[chosen]
    print(json.dumps({"validation": validation, "chosen": chosen}), flush=True)
    methods = {
        "cfg=1": (1.0, plain_prompts, [empty] * len(cells)),
        "cfg=5, negative as uc": (TEACHER_W, plain_prompts, [negative_cond[k] for _, k in cells]),
        "cfg=5, no negative": (TEACHER_W, plain_prompts, [empty] * len(cells)),
        "DICE paper-way, negative as uc": (1.0, dice(trained["paper"]["bundle"], True), [empty] * len(cells)),
        "DICE paper-way, no negative": (1.0, dice(trained["paper"]["bundle"], False), [empty] * len(cells)),
        "DICE negative-aware, negative as uc": (1.0, dice(trained["negative-aware"]["bundle"], True), [empty] * len(cells)),
        "DICE negative-aware, no negative": (1.0, dice(trained["negative-aware"]["bundle"], False), [empty] * len(cells)),
    }
    per_cell, rows = {}, {}
    for name, (cfg, positives, negs) in methods.items():
        per_cell[name] = score(cfg, positives, negs, split_seeds["test"])
        shows, aligned = per_cell[name]["shows"], per_cell[name]["aligned"]
        rows[name] = {"shows_named_colour": float(shows.mean()), "shows_ci95": bootstrap_mean(shows),
                      "shape_and_position": float(aligned.mean()), "aligned_ci95": bootstrap_mean(aligned)}
        print(json.dumps({name: rows[name]}), flush=True)
    aware, reference = per_cell["DICE negative-aware, negative as uc"], per_cell["cfg=5, negative as uc"]
    rate_gap = aware["shows"] - reference["shows"]
    align_gap = aware["aligned"] - per_cell["DICE paper-way, no negative"]["aligned"]
    goals = {
        "rate_vs_cfg_w": {"gap": float(rate_gap.mean()), "gap_ci95": bootstrap_mean(rate_gap),
                          "goal": f"<= {RATE_MARGIN}", "met": float(rate_gap.mean()) <= RATE_MARGIN},
        "alignment_vs_paper_dice_without_negative": {"gap": float(align_gap.mean()), "gap_ci95": bootstrap_mean(align_gap),
                                                     "goal": f">= -{ALIGNMENT_MARGIN}",
                                                     "met": float(align_gap.mean()) >= -ALIGNMENT_MARGIN},
    }
    result = {
        "rows": rows, "goals": goals, "negatives": negatives, "eval_prompts": [r[0] for r in eval_rows],
        "train_prompts": len(captions), "cells": len(cells), "seeds": len(split_seeds["test"]),
        "images_per_method": len(cells) * len(split_seeds["test"]),
        "validation": {"seeds": len(split_seeds["validation"]), "means": validation, "chosen": chosen,
                       "rule": "least shortfall against both goals, then lowest rate, then highest alignment",
                       "candidates": {k: {kk: vv for kk, vv in v.items() if kk != "bundle"} for k, v in aware_runs.items()}},
        "training": {k: {kk: vv for kk, vv in v.items() if kk != "bundle"} for k, v in trained.items()},
        "train_steps": a.steps, "seconds": time.time() - t0,
    }
    print(json.dumps({"goals": goals}), flush=True)
    return common.write_json(result, a.json)


if __name__ == "__main__":
    main()
