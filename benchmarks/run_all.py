"""`make bench` and `make bench-studies`: the CPU benchmarks, then benchmarks/results.json and BENCHMARKS.md are
rewritten. Each section's wall time is recorded beside its figures.

  python -m benchmarks.run_all                 # make bench: toy world 2, speed, cost curve, padding
  python -m benchmarks.run_all --studies       # make bench-studies: toy world 1, controls and stages (hours)
  python -m benchmarks.run_all --only toyworld sampling
  python -m benchmarks.run_all --only padding      # T5 padding study, about 3 minutes
  python -m benchmarks.run_all --only toyworld2    # toy world 2's table on the shipped world-2 base models
  python -m benchmarks.run_all --only controls --controls negatives   # one of the controls studies
  python -m benchmarks.run_all --only stages       # timestep stages against the single refiner, about 1 hour
GPU figures come from benchmarks/run_gpu.py on a lent card; its JSON-lines output is kept under
benchmarks/gpu_runs/ and merged into the same files, keyed by card:
  python -m benchmarks.run_all --merge-gpu benchmarks/gpu_runs/*.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

from benchmarks import common
from benchmarks.report import write_benchmarks_md

RESULTS = os.path.join(common.REPO, "benchmarks", "results.json")
BENCHMARKS_MD = os.path.join(common.REPO, "BENCHMARKS.md")


# The speed sections run alone, so they time every core (the CPU figures on record are 2 threads on this 2-core
# machine), whatever OMP_NUM_THREADS the Makefile sets for the single-threaded tests. At one thread the four speed
# sections took 29 minutes here (padding included, which runs in this process), 93 with the toyworld2 section.
SPEED_THREADS = os.cpu_count() or 1


def sampling(device: str) -> dict:
    runs = {}
    # 256 px at batch 1 and 2, and 512 px (2 steps, so that it finishes) where the CPU is compute-bound.
    for res, batch, steps, repeats in ((256, 1, 4, 3), (256, 2, 4, 3), (512, 1, 2, 2)):
        name = f"sd15_{res}px_batch{batch}"
        runs[name] = common.run_child("bench_sampling", ["--family", "sd15", "--res", str(res), "--steps", str(steps),
                                                            "--batch", str(batch), "--repeats", str(repeats), "--device", device],
                                          threads=SPEED_THREADS)
        print(json.dumps(runs[name]), flush=True)
    return runs


def training(device: str) -> dict:
    # Step time: both loops in one process, alternating node, reference, node, reference, so that
    # both see the same machine state; the faster run of each is compared (a 2-core machine drifts
    # by several percent between processes). Peak memory: each loop alone in a fresh process, since
    # peak RSS cannot be reset inside one.
    args = ["--family", "sd15", "--res", "128", "--batch", "2", "--steps", "6", "--warmup", "2", "--device", device]
    timed = common.run_child_all("bench_training", ["--mode", "node", "reference", "node", "reference", *args],
                                 threads=SPEED_THREADS)
    runs = {mode: [r for r in timed if r["mode"] == mode] for mode in ("node", "reference")}
    node = dict(min(runs["node"], key=lambda r: r["s_per_step"]))
    ref = dict(min(runs["reference"], key=lambda r: r["s_per_step"]))
    for r in (node, ref):
        alone = common.run_child("bench_training", ["--mode", r["mode"], *args], threads=SPEED_THREADS)
        r["peak_rss_mb"], r["rss_before_loop_mb"] = alone["peak_rss_mb"], alone["rss_before_loop_mb"]
    out = {"node": node, "reference": ref, "step_ratio_node_over_reference": node["s_per_step"] / ref["s_per_step"],
           "peak_rss_ratio": node["peak_rss_mb"] / ref["peak_rss_mb"],
           "all_s_per_step": {mode: [r["s_per_step"] for r in rs] for mode, rs in runs.items()}}
    print(json.dumps(out), flush=True)
    return out


def cost_curve(device: str) -> list[dict]:
    points = []
    base = {"batch": 1, "res": 128, "tokens": 77}
    grid = [dict(base), dict(base, batch=2), dict(base, batch=4), dict(base, res=256), dict(base, tokens=154),
            dict(base, tokens=231)]
    for p in grid:
        r = common.run_child("bench_training", ["--mode", "node", "--family", "sd15", "--res", str(p["res"]), "--batch",
                                                    str(p["batch"]), "--tokens", str(p["tokens"]), "--steps", "3", "--warmup",
                                                    "1", "--device", device], threads=SPEED_THREADS)
        points.append(r)
        print(json.dumps(r), flush=True)
    return points


def toyworld(quick: bool) -> dict:
    from benchmarks import toyworld_table

    args = ["--grid", os.path.join(common.REPO, "docs", "toyworld_grid.png")]
    table = toyworld_table.main(args + (["--quick"] if quick else []))
    return {**table, "machine": common.machine(), "date": datetime.date.today().isoformat()}


def padding(device: str) -> dict:
    """Padded against unpadded T5 prompts for the refiner, on tiny PixArt-alpha (benchmarks/padding_study.py)."""
    from benchmarks import padding_study

    result = padding_study.main(["--models", "8"])
    # Its own date: a `--only padding` run must not restamp the other CPU figures.
    return {**{k: v for k, v in result.items() if k != "rows"}, "date": datetime.date.today().isoformat()}


TOYWORLD2_WORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_work")


def toyworld2(table_args: tuple[str, ...] = (), ship_refiner: str | None = None) -> dict:
    """Toy world 2's table (issue 13, benchmarks/toyworld2_table.py) on the shipped world-2 base models; it trains
    only refiners, and ships the first one (base seed 0, refiner seed 0) to `ship_refiner`, by default
    toyworld/weights/world2/dice_refiner.safetensors. Its own date and machine, so that `--only toyworld2` leaves the
    section's as they are. `table_args` go to every toyworld2_table process (the tests shrink the table with them)."""
    from benchmarks import toyworld2_table, toyworld_table

    toyworld_table.setup()  # ComfyUI first: comfy_objects imports it (toyworld2 is `make bench`'s first section)
    from toyworld import comfy_objects

    bases = comfy_objects.world2_base_paths()
    if not bases:
        return {"skipped": "no world-2 base model is shipped (toyworld/README.md, world 2)"}
    # One process per base model, side by side (about an hour each here, where one after the other would not fit
    # make bench's 90). Each checkpoints to its own file under benchmarks/_work/ and resumes from it, so a stopped
    # `make bench` goes on where it stopped; work is reused only for the same settings, code (sha256 of the sources
    # the figures depend on) and base files. Delete benchmarks/_work/ to measure everything afresh.
    os.makedirs(TOYWORLD2_WORK, exist_ok=True)
    ship_refiner = ship_refiner or comfy_objects.WORLD2_REFINER_PATH
    commands = [["-m", "benchmarks.toyworld2_table", *args, *table_args] for args in toyworld2_commands(bases, ship_refiner)]
    parts = run_side_by_side(commands)
    table = toyworld2_table.main(["--json", os.path.join(TOYWORLD2_WORK, "toyworld2_table.json"), "--earlier", *parts,
                                  *table_args])
    # Where the section went on from checkpointed work, its wall time is the longest process's (main takes the larger
    # of this and its own clock); the table's `seconds` adds the processes up.
    wall = max(base["seconds"] for base in table["bases"])
    return {**table, "wall_seconds": wall, "machine": common.machine(), "date": datetime.date.today().isoformat()}


def toyworld2_commands(bases: list[str], ship_refiner: str) -> list[list[str]]:
    """toyworld2_table's arguments for each base model's process. The first validates (and chooses for all) and saves
    its first refiner to `ship_refiner`; the others wait for its choice, doing the work that needs none first. The
    rows beyond the teacher's settings go to the second process, which waits, so that the two take about as long."""
    parts = [os.path.join(TOYWORLD2_WORK, f"toyworld2_base{i}.json") for i in range(len(bases))]
    commands = []
    for i, (base, part) in enumerate(zip(bases, parts)):
        args = ["--bases", base, "--json", part, "--resume"]
        if i == 0:
            args += ["--settings-rows", "validation" if len(bases) == 1 else "none", "--ship-refiner", ship_refiner]
        else:
            args += ["--choice-from", parts[0], "--settings-rows", "here" if i == 1 else "none"]
        commands.append(args)
    return commands


def run_side_by_side(commands: list[list[str]]) -> list[str]:
    """Run `python ARGS...` for each command at once, one thread each, output to this console; the --json files they
    write. If one fails, the others are stopped (a process waiting for a failed validation would wait for hours)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, *args], cwd=common.REPO, env=env) for args in commands]
    try:
        while not all(p.poll() == 0 for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                raise RuntimeError(f"{failed[0].args[1:]} failed with exit code {failed[0].returncode}")
            time.sleep(5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
    return [args[args.index("--json") + 1] for args in commands]


def stages() -> dict:
    """Timestep-aware refinement against the paper's single refiner, in toy world 1 (benchmarks/stages_study.py):
    chosen on validation seeds, reported on test seeds. Its own date and machine."""
    from benchmarks import stages_study

    return {**stages_study.main([]), "machine": common.machine(), "date": datetime.date.today().isoformat()}


# `make bench`: the headline and the speed figures. The studies behind the sampling-time controls and the timestep
# stages take about an hour each on this 2-core machine (see BENCHMARKS.md's wall times), so they are
# `make bench-studies`; their figures stay in results.json until they are rerun.
# Toy world 1's table is a study since toy world 2 leads: its two refiners alone trained for 19 minutes (342 s and
# 775 s recorded), and with it make bench would pass its 90 minutes.
HEADLINE = ("toyworld2", "sampling", "training", "cost_curve", "padding")
STUDIES = ("toyworld", "controls", "stages")
# Sections that record their own machine and date, so an `--only` run of them leaves the CPU section's as they are.
OWN_DATE_SECTIONS = {"padding", "controls", "toyworld2", "stages", "toyworld"}
CONTROL_STUDIES = ("negatives", "dial", "transfer")


def controls(previous: dict | None, studies=CONTROL_STUDIES) -> dict:
    """The controls people use at sampling time (issue 14): negative prompts (benchmarks/negative_study.py), the
    guidance dial (benchmarks/dial_study.py) and a LoRA stacked on the model (benchmarks/transfer_study.py).
    `studies` reruns some of them (about 40 min each on one thread) and keeps the others' figures from `previous`;
    each study records its own date and machine."""
    from benchmarks import dial_study, negative_study, transfer_study

    run = {"negatives": negative_study.main, "dial": dial_study.main, "transfer": transfer_study.main}
    out = dict(previous or {})
    for name in studies:
        out[name] = {**run[name]([]), "machine": common.machine(), "date": datetime.date.today().isoformat()}
    return {**out, "machine": common.machine(), "date": datetime.date.today().isoformat()}


def merge_gpu(files: list[str], results: dict) -> None:
    """Fold run_gpu.py's records into results.json: later files replace earlier figures for the same
    measurement; every training-grid run is kept, because single launch-bound steps are noisy."""
    for path in sorted(files):
        run = os.path.splitext(os.path.basename(path))[0]
        for line in open(path):
            r = json.loads(line)
            section = results.setdefault(f"gpu:{r['machine']['gpu']}", {})
            section["machine"] = r["machine"]
            section["date"] = run.split("_")[0]
            phase = r["phase"]
            if phase.startswith("sampling"):
                section.setdefault("sampling", {})[f"{r['family']}_{r['res']}px_batch{r['batch']}"] = r
            elif phase.startswith("probe"):
                section.setdefault("unet_probe", {})[f"{r['family']}_{r['res']}px_batch{r['batch']}"] = r
            elif phase.startswith("training"):
                section.setdefault("training_grid", {}).setdefault(run, []).append(r)
            elif phase == "precision":
                section.setdefault("precision", {})[f"{r['family']}_{r['precision']}"] = r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", choices=["toyworld", "toyworld2", "sampling", "training", "cost_curve", "padding",
                                               "controls", "stages"],
                    default=None)
    ap.add_argument("--controls", nargs="+", choices=CONTROL_STUDIES, default=list(CONTROL_STUDIES),
                    help="with controls: which of its studies to rerun (the others keep their recorded figures)")
    ap.add_argument("--studies", action="store_true",
                    help=f"run the studies ({', '.join(STUDIES)}; `make bench-studies`) instead of `make bench`'s sections")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick-toyworld", action="store_true")
    ap.add_argument("--merge-gpu", nargs="+", metavar="JSONL", help="merge run_gpu.py output instead of measuring")
    a = ap.parse_args()
    if a.merge_gpu:
        results = read_results()
        merge_gpu(a.merge_gpu, results)
        with open(RESULTS, "w") as f:
            json.dump(results, f, indent=1)
        write_benchmarks_md(results, BENCHMARKS_MD)
        print(f"merged {len(a.merge_gpu)} GPU files into {RESULTS} and BENCHMARKS.md")
        return
    key = "cpu" if a.device == "cpu" else f"gpu:{common.machine().get('gpu', a.device)}"
    todo = a.only or (list(STUDIES) if a.studies else list(HEADLINE))
    stamp = {}
    # Sections in OWN_DATE_SECTIONS carry their own machine and date; the CPU section's are restamped only when a
    # section without its own (sampling, training, ...) is measured. (Tested on `todo`, not on `--only`: a plain
    # `make bench` has no `--only` and must restamp.)
    if not set(todo) <= OWN_DATE_SECTIONS:
        stamp = {"machine": common.machine(), "date": datetime.date.today().isoformat()}
    for name in todo:
        print(f"== {name}", flush=True)
        started = time.time()
        if name == "toyworld":
            figures = toyworld(a.quick_toyworld)
        elif name in ("toyworld2", "stages"):
            figures = globals()[name]()
        elif name == "controls":
            figures = controls(read_results().get(key, {}).get("controls"), a.controls)
        else:
            figures = globals()[name](a.device)
        # With its wall time, so that what `make bench` costs is measured per section, not guessed. A section that
        # went on from checkpointed work (toyworld2) counts that work too: its own `wall_seconds`.
        seconds = max(time.time() - started, figures.get("wall_seconds", 0.0) if isinstance(figures, dict) else 0.0)
        results = record_section(key, name, figures, stamp, seconds=seconds)
    write_benchmarks_md(results, BENCHMARKS_MD)
    print(f"wrote {RESULTS} and BENCHMARKS.md")


def read_results() -> dict:
    return json.load(open(RESULTS)) if os.path.exists(RESULTS) else {}


def record_section(key: str, name: str, figures, stamp: dict, seconds: float | None = None) -> dict:
    """Write one study's figures into results.json as it is on disk now, not as it was when this run started: two
    `--only` runs side by side (each over an hour) then keep each other's figures. Written atomically, so a reader
    never sees half a file."""
    results = read_results()
    section = results.setdefault(key, {})
    if stamp:
        # A section recorded before it carried its own date was measured under the section's: it keeps that one.
        for own in OWN_DATE_SECTIONS & set(section):
            if isinstance(section[own], dict) and "date" not in section[own] and "date" in section:
                section[own] = {**section[own], "date": section["date"], "machine": section.get("machine", {})}
    section.update(stamp)
    section[name] = figures
    if seconds is not None:
        section.setdefault("section_seconds", {})[name] = round(seconds, 1)
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, RESULTS)
    return results


if __name__ == "__main__":
    main()
