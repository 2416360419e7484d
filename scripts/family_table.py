"""Rebuild the README's model-family table from what the family tests proved.

`make families` runs every tests/test_family_*.py on both runtimes; each passing check writes its
figures to .family-results/<ComfyUI version>/<family>.json (dice_testkit/family_checks.py). This script turns
those records into the table between the README's family-table markers. A family is listed as tested
on a runtime only if every check passed there; nothing in the table is typed by hand.

    python -m scripts.family_table            # rewrite README.md
    python -m scripts.family_table --print    # print the table only
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIMES = ("0.3.75", "0.33.0")
CHECKS = ("held_out_ratio", "rows_cfg_w", "rows_dice", "strength_zero_exact", "other_family_refused")
START, END = "<!-- family-table:start -->", "<!-- family-table:end -->"


def family_modules() -> list:
    from dice_testkit import tiny_families

    return [importlib.import_module(f"dice_testkit.tiny_families.{m.name}") for m in pkgutil.iter_modules(tiny_families.__path__)]


def records(results: str) -> dict:
    found: dict = {}
    for runtime in RUNTIMES:
        folder = os.path.join(results, runtime)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                data = json.load(f)
            found[(data["family"], runtime)] = data
    return found


def table(results: str) -> str:
    from dice_core.families import _NO_CFG, cfg_families
    from dice_core.refiner import Refiner, count_parameters

    infos = {f.name: f for f in cfg_families()}
    found = records(results)
    rows = [
        "| family (ComfyUI config) | tested on a tiny model of the real architecture | refiner parameters | "
        "held-out loss, refined / unrefined (0.3.75; 0.33.0) | handled specially |",
        "|---|---|---|---|---|",
    ]
    tested = set()
    for module in sorted(family_modules(), key=lambda m: list(infos).index(m.FAMILY) if m.FAMILY in infos else 99):
        passed = [r for r in RUNTIMES if all(k in found.get((module.FAMILY, r), {}) for k in CHECKS)]
        ratios = "; ".join(f"{found[(module.FAMILY, r)]['held_out_ratio']:.3f}" if r in passed else "-" for r in RUNTIMES)
        label = infos[module.FAMILY].label if module.FAMILY in infos else module.FAMILY
        params = count_parameters(Refiner(module.EMBED_DIM))
        where = ", ".join(f"ComfyUI {r}" for r in passed) or "**not passing**"
        rows.append(f"| {label} (`{module.FAMILY}`) | {where} | {params / 1e6:.2f}M (width {module.EMBED_DIM}) | "
                    f"{ratios} | {module.NOTES} |")
        tested.add(module.FAMILY)
    for info in infos.values():
        if info.name not in tested:
            base = infos.get(info.same_as)
            rows.append(f"| {info.label} (`{info.name}`) | not tested separately: same architecture and text encoder "
                        f"as {base.label if base else '?'} | | | |")
    for name in _NO_CFG:
        rows.append(f"| `{name}` | guidance-distilled: both DICE nodes refuse it with a sentence "
                    f"(tests/test_family_no_cfg.py covers Flux, FluxSchnell) | | | no CFG to distil |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=os.path.join(REPO, ".family-results"))
    parser.add_argument("--print", action="store_true", help="print the table instead of rewriting README.md")
    args = parser.parse_args()
    text = table(args.results)
    if args.print:
        print(text)
        return
    path = os.path.join(REPO, "README.md")
    with open(path, encoding="utf-8") as f:
        readme = f.read()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{START}\n{text}\n{END}{tail}")
    print(f"README.md: family table rebuilt from {args.results}")


if __name__ == "__main__":
    main()
