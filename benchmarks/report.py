"""Renders benchmarks/results.json as BENCHMARKS.md (no measuring here: figures come only from results.json)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HEADER = """# Benchmarks

Every figure below is produced by `make bench` (`benchmarks/run_all.py`), which writes
`benchmarks/results.json` and regenerates this file. Wall times come from a shared, noisy 2-core
CPU; assertions in the test suite use model-call counts and accuracies, never wall time.
"""


def _machine(m: dict) -> str:
    dev = m.get("gpu") or f"CPU ({m.get('cpus')} cores, {m.get('cpu_threads')} torch threads)"
    return f"{dev}; {m.get('platform')}; torch {m.get('torch')}"


def _sampling(runs: dict) -> list[str]:
    out = ["| run | cfg=w wall (s) | DICE cfg=1 wall incl. refiner (s) | DICE/CFG | refiner overhead (of cfg=1 sampling) | "
           "model calls cfg / DICE | rows through the UNet cfg / DICE |", "|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        c, d = r["model_calls"]["cfg"], r["model_calls"]["dice"]
        out.append(f"| {name} ({r['steps']} steps, {r['dtype']}) | {r['cfg_s']:.2f} | {r['dice_total_s']:.2f} | "
                   f"**{r['ratio_dice_over_cfg']:.3f}** | {100 * r['refiner_overhead_fraction']:.3f}% | {c['calls']} / {d['calls']} | "
                   f"{c['rows']} / {d['rows']} |")
    return out


def _training(t: dict) -> list[str]:
    n, r = t["node"], t["reference"]
    return [
        f"Full-size SD1.5 UNet (random weights), {n['res']} px, batch {n['batch']}, {n['steps_timed']} timed steps after warm-up.",
        "",
        "| loop | s/step | peak RSS (MB) | RSS before the loop (MB) |", "|---|---|---|---|",
        f"| DICE Train Refiner's loop (calc_cond_batch, ComfyUI machinery) | {n['s_per_step']:.3f} | {n['peak_rss_mb']:.0f} | "
        f"{n['rss_before_loop_mb']:.0f} |",
        f"| minimal hand-written PyTorch loop (direct UNet call) | {r['s_per_step']:.3f} | {r['peak_rss_mb']:.0f} | "
        f"{r['rss_before_loop_mb']:.0f} |",
        "",
        f"Step-time ratio node/reference: **{t['step_ratio_node_over_reference']:.3f}** (goal <= 1.10); "
        f"peak-memory ratio: **{t['peak_rss_ratio']:.3f}**.",
    ]


def _cost(points: list[dict]) -> list[str]:
    out = ["| batch | resolution | prompt tokens | s/step | peak RSS (MB) |", "|---|---|---|---|---|"]
    for p in points:
        out.append(f"| {p['batch']} | {p['res']} | {p['tokens']} | {p['s_per_step']:.3f} | {p['peak_rss_mb']:.0f} |")
    return out


def write_benchmarks_md(results: dict, path: str) -> None:
    import toyworld_table

    lines = [HEADER]
    for key, section in results.items():
        lines += [f"## {key.upper() if key == 'cpu' else key}: {_machine(section.get('machine', {}))}", "",
                  f"Measured {section.get('date', '?')}.", ""]
        if "toyworld" in section:
            lines += ["### DICE in the toy world (the paper's table, measured exactly)", "",
                      "![cfg=1 | cfg=5 | DICE](docs/toyworld_grid.png)", "", toyworld_table.markdown(section["toyworld"]), ""]
        if "sampling" in section:
            lines += ["### Sampling speed-up (full-size SD1.5 architecture, random weights)", ""] + _sampling(section["sampling"]) + [""]
        if "training" in section:
            lines += ["### Training step: node loop against a minimal PyTorch loop", ""] + _training(section["training"]) + [""]
        if "cost_curve" in section:
            lines += ["### Training cost curve (node loop, full-size SD1.5 UNet)", ""] + _cost(section["cost_curve"]) + [""]
    extra = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
    if os.path.exists(extra):
        lines += [open(extra).read()]
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    import json

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_benchmarks_md(json.load(open(os.path.join(root, "benchmarks", "results.json"))), os.path.join(root, "BENCHMARKS.md"))
