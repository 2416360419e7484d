"""Timestep-aware refinement against the paper's single refiner, in toy world 1 (issues 13 and 14).

A timestep-aware refiner (DICE Train Refiner's timestep_stages) is one refiner per range of the sampling,
delivered as ComfyUI's own start_percent/end_percent CONDITIONING entries: still one model pass per step.
Arms, each trained with the node on world 1's training captions at w = 5 (batch 32, 8 teacher samples per prompt):
- the paper's single refiner at 600 steps, as the dial study's single-scale refiner;
- four stages at sampling percents 0.08, 0.24 and 0.5 (teacher steps [0, 2), [2, 5), [5, 10), [10, 20) of 20),
  600 steps: every step trains each stage on a batch, so four times the refiner work;
- the single refiner at 2400 steps: the same refiner work as the four stages, so the comparison is at equal cost.
Each arm's strength (1 or 1.25) is chosen on the validation seeds by accuracy (the distance to CFG's images
breaks ties); every arm is then reported on the test seeds, with the noise seeds split as in the dial study:
recovery = (DICE - cfg 1) / (cfg 5 - cfg 1) with a 95% bootstrap interval over the 18 held-out prompts, the
difference in recovery from the first arm (the single refiner at 600 steps) with its interval, and the images' distance to cfg 5's
over cfg 1's. A dpmpp_2m 10-step row checks that the stages, set in sampling percents, carry to a sampler and step
count the teacher never used.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.stages_study [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks import common
from benchmarks.dial_study import bootstrap_recovery, recovery
from benchmarks.negative_study import bootstrap_mean

W_TRAIN = 5.0
# "steps[:edges]", edges joined by "/" (the node's timestep_stages); the first is the baseline the others are
# compared with.
ARMS = ("600", "600:0.08/0.24/0.5", "2400")
STRENGTHS = (1.0, 1.25)
TRANSFER_SAMPLING = ("dpmpp_2m", 10)


def parse_arm(text: str) -> tuple[int, str]:
    steps, *stages = text.split(":")
    return int(steps), ", ".join(stages[0].split("/")) if stages else ""


def arm_name(text: str) -> str:
    steps, stages = parse_arm(text)
    return f"{steps} steps, " + (f"{len(stages.split(',')) + 1} timestep stages at {stages}" if stages else "one refiner")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS),
                   help="steps[:edges], e.g. 600 or 600:0.08/0.24/0.5; the first is the baseline")
    p.add_argument("--validation-seeds", type=int, default=5)
    p.add_argument("--test-seeds", type=int, default=10)
    p.add_argument("--json")
    a = p.parse_args(argv)
    baseline = a.arms[0]

    from benchmarks import toyworld_table

    nodes_map, model, clip, prompts, seeds = toyworld_table.held_out_study(a.validation_seeds, a.test_seeds)
    from toyworld import world
    from toyworld.evaluate import SamplingOptions, sample_and_score

    t0 = time.time()
    bundles, train_s = {}, {}
    for arm in a.arms:
        steps, stages = parse_arm(arm)
        settings = toyworld_table.NodeSettings(steps=steps, seed=0, batch_size=32, lr=0.0, samples_per_prompt=8,
                                               timestep_stages=stages)
        bundles[arm], _, train_s[arm] = toyworld_table.train_refiner_with_node(nodes_map, model, clip,
                                                                               world.TRAIN_CAPTIONS, settings)
    refine = nodes_map["DiceRefineConditioning"]

    def sample(split: str, cfg: float, arm: str | None = None, strength: float = 1.0, options=None) -> dict:
        transform = None if arm is None else (lambda cond: refine.execute(cond, bundles[arm], strength).args[0])
        with torch.inference_mode():
            r = sample_and_score(model, clip, prompts, seeds[split], cfg, sampling=options, positive_transform=transform)
        return {"correct": r["correct"], "rgb": world.latent_to_rgb(r["latents"])}

    def distance(run: dict, reference: dict, cfg1: dict) -> float:
        return float(((run["rgb"] - reference["rgb"]) ** 2).mean()) / float(((cfg1["rgb"] - reference["rgb"]) ** 2).mean())

    def accuracy(run: dict) -> float:
        return float(run["correct"].float().mean())

    runs = {split: {"cfg1": sample(split, 1.0), "cfg5": sample(split, W_TRAIN)} for split in seeds}
    chosen = {}
    for arm in a.arms:
        val = {s: sample("validation", 1.0, arm, s) for s in STRENGTHS}
        base = runs["validation"]
        chosen[arm] = max(STRENGTHS, key=lambda s: (accuracy(val[s]), -distance(val[s], base["cfg5"], base["cfg1"])))
        runs["validation"][arm] = val[chosen[arm]]
        runs["test"][arm] = sample("test", 1.0, arm, chosen[arm])
        print(f"{arm}: strength {chosen[arm]:g} (validation accuracy "
              + ", ".join(f"{s:g}: {accuracy(v):.3f}" for s, v in val.items()) + ")", flush=True)

    def rows(split_runs: dict) -> dict:
        one, five = split_runs["cfg1"], split_runs["cfg5"]
        gain = accuracy(five) - accuracy(one)
        out = {}
        for arm in a.arms:
            run = split_runs[arm]
            # per prompt, the accuracy difference from the baseline in units of CFG's gain: its mean is the
            # difference in recovery
            diff = (run["correct"].float().mean(1) - split_runs[baseline]["correct"].float().mean(1)) / max(gain, 1e-6)
            out[arm] = {"name": arm_name(arm), "strength": chosen[arm], "accuracy": accuracy(run),
                        "recovery": recovery(run["correct"], one["correct"], five["correct"]),
                        "recovery_ci95": bootstrap_recovery(run["correct"], one["correct"], five["correct"]),
                        "recovery_minus_baseline": float(diff.mean()), "recovery_minus_baseline_ci95": bootstrap_mean(diff),
                        "distance_over_cfg1": distance(run, five, one)}
        return {"cfg1": accuracy(one), "cfg5": accuracy(five), "arms": out}

    transfer_options = SamplingOptions(steps=TRANSFER_SAMPLING[1], sampler=TRANSFER_SAMPLING[0])
    transfer = {"cfg1": sample("test", 1.0, options=transfer_options), "cfg5": sample("test", W_TRAIN, options=transfer_options)}
    for arm in a.arms:
        transfer[arm] = sample("test", 1.0, arm, chosen[arm], options=transfer_options)
    result = {
        "w_train": W_TRAIN, "arms": list(a.arms), "baseline": baseline, "train_s": train_s, "chosen_strength": chosen,
        "pairs": {split: len(prompts) * len(s) for split, s in seeds.items()},
        "validation": rows(runs["validation"]), "test": rows(runs["test"]),
        "test_other_sampler": {"sampler": TRANSFER_SAMPLING[0], "steps": TRANSFER_SAMPLING[1], **rows(transfer)},
        "seconds": time.time() - t0,
    }
    return common.write_json(result, a.json)


if __name__ == "__main__":
    main()
