"""Does this machine reproduce the shipped world-2 refiner? Retrains it with the table's settings and compares tensors.

The table (benchmarks/toyworld2_table.py) ships base seed 0's refiner seed 0 as toyworld/weights/world2/
dice_refiner.safetensors. This retrains that refiner alone, with the DICE Train Refiner node and the settings the
table records (its chosen candidate, refiner seed, captions and teacher samples per prompt), and compares every tensor
with the shipped file's: bit-equal on the machine that ran the table shows that training is reproducible on one CPU,
and a difference elsewhere that the CPU's floating-point kernels change the refiner (the figures it drives move with
it; BENCHMARKS.md's notes).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python -m benchmarks.toyworld2_reproduce [--save /tmp/retrained.safetensors]

About 20 minutes on one thread here. --steps and --captions shrink it for tests, against --against FILE.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from benchmarks import run_all, toyworld2_table, toyworld_table


def tensor_differences(file_a: str, file_b: str) -> dict:
    """Whether two refiner files hold the same tensor names and values, bit for bit, and the largest difference."""
    from safetensors.torch import load_file

    a, b = load_file(file_a), load_file(file_b)
    shared = sorted(set(a) & set(b))
    largest = max(((a[k].double() - b[k].double()).abs().max().item() for k in shared if a[k].shape == b[k].shape),
                  default=float("nan"))
    same_names = set(a) == set(b)
    return {"same_names": same_names, "bit_equal": same_names and all(torch.equal(a[k], b[k]) for k in shared),
            "max_abs_difference": largest}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", help="the refiner file to compare with (default: the shipped one, with the table's settings)")
    p.add_argument("--steps", type=int, help="override the candidate's steps (for tests)")
    p.add_argument("--captions", type=int, help="override the table's training captions (for tests)")
    p.add_argument("--save", default=None, help="keep the retrained refiner here (default: a temporary file)")
    a = p.parse_args(argv)
    if (a.steps or a.captions) and not a.against:
        p.error("--steps and --captions train another refiner than the shipped one: give --against, the file to compare")
    nodes_map = toyworld_table.setup()
    import tempfile

    from dice_core.fileformat import save_refiner
    from toyworld import comfy_objects, world2
    from toyworld.train_base import _sha256

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    table = run_all.read_results()["cpu"]["toyworld2"]
    (base,) = [b for b in table["bases"] if "shipped_refiner" in b]
    candidate = base["chosen"]["candidate"]
    if a.steps:
        recipe, _, *fields = candidate.split(":")
        candidate = ":".join([recipe, str(a.steps), *fields])
    settings = toyworld2_table.node_settings(candidate, base["shipped_refiner"]["refiner_seed"], table["samples_per_prompt"])
    base_path = {_sha256(path): path for path in comfy_objects.world2_base_paths()}[base["sha256"]]
    model, clip, _ = comfy_objects.load_toy_world2(base_path)
    captions = world2.refiner_captions(a.captions or table["refiner_captions"])
    bundle, _, seconds = toyworld_table.train_refiner_with_node(nodes_map, model, clip, captions, settings)
    against = a.against or comfy_objects.WORLD2_REFINER_PATH
    with tempfile.TemporaryDirectory() as scratch:
        path = a.save or os.path.join(scratch, "retrained.safetensors")
        save_refiner(path, bundle, include_optimizer=False)
        result = {"candidate": candidate, "train_s": seconds, "against": against, **tensor_differences(path, against)}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
