"""The paper's headline table, reproduced in the toy world where prompt alignment is measured exactly.

Trains DICE refiners with the pack's own DICE Train Refiner node on the shipped toy base model, then
samples held-out prompts (combinations never seen in training) with KSampler (nodes.common_ksampler,
euler, 20 steps) for every method and scores each image with the exact analyser.

  python -m benchmarks.toyworld_table            # full: 2 refiner seeds, 18 prompts x 20 seeds = 360 pairs
  python -m benchmarks.toyworld_table --quick    # CI-sized: 1 refiner seed, fewer steps and pairs
Writes JSON (--json), a Markdown table (--md) and a comparison grid PNG (--grid).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from dataclasses import dataclass

import torch


def setup():
    from dice_comfy.setup import setup_comfy

    setup_comfy(pytorch_attention=True)
    from dice_testkit import harness

    return harness.load_pack()


@dataclass(frozen=True)
class NodeSettings:
    """The DICE Train Refiner inputs this table varies; the rest are the teacher's (euler 20)."""

    steps: int
    seed: int
    batch_size: int
    lr: float  # 0: the recipe's
    samples_per_prompt: int
    recipe: str = "dice-pack"
    loss: str = "auto"
    negative_prompts: str = ""  # negative-aware training: one per line; "" is the paper's way
    guidance_range: tuple[float, float] = (0.0, 0.0)  # the dial's range of w; (0, 0): one scale, the paper's refiner
    image_px: int = 128  # the teacher's image size: world 1's 16x16 latent; world 2's 24x24 is 192
    timestep_stages: str = ""  # timestep-aware refinement's stage edges, as the node's text; "": one stage
    guidance_scale: float = 5.0  # the teacher's cfg: world 1's 5; world 2's is toyworld2_table.TEACHER_W


@contextlib.contextmanager
def console_progress(training_steps: int):
    """The node's progress bar on the console, as ComfyUI's server shows it in the page: the node reports one
    bar over teacher sampling and then training, so the last `training_steps` units are training."""
    import comfy.utils
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def hook(value, total, preview=None, node_id=None):
        teacher_total = total - training_steps
        phase, done, size = (("teacher sampling", value, teacher_total) if value <= teacher_total or not training_steps
                              else ("training", value - teacher_total, training_steps))
        if phase == "training" and "teacher sampling" in bars:
            bars.pop("teacher sampling").close()
        bar = bars.get(phase) or bars.setdefault(phase, tqdm(total=size, desc=f"  {phase}", unit="step", mininterval=2.0,
                                                           dynamic_ncols=True))
        bar.update(done - bar.n)

    saved = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(saved)
        for bar in bars.values():
            bar.close()


def train_refiner_with_node(nodes_map, model, clip, captions, settings: NodeSettings):
    """Exactly what a user's DICE Train Refiner node does, with the node's own code."""
    node = nodes_map["DiceTrainRefiner"]
    t0 = time.time()
    with torch.inference_mode(), console_progress(settings.steps):  # inference mode: as ComfyUI's executor runs nodes
        out = node.execute(
            model, clip=clip, prompts="\n".join(captions), prompts_file="(none)", steps=settings.steps,
            batch_size=settings.batch_size, guidance_scale=settings.guidance_scale, recipe=settings.recipe, learning_rate=settings.lr,
            loss=settings.loss, seed=settings.seed, width=settings.image_px, height=settings.image_px, samples_per_prompt=settings.samples_per_prompt,
            teacher_steps=20, save_every=0, filename_prefix="toyworld_bench", gradient_checkpointing=False, autocast="none",
            negative_prompts=settings.negative_prompts, guidance_range_min=settings.guidance_range[0],
            guidance_range_max=settings.guidance_range[1], timestep_stages=settings.timestep_stages,
        )
    return out.args[0], out.args[1], time.time() - t0


def stage_edges_text(fields: list[str]) -> str:
    """A candidate's optional stage field ("0.08/0.24/0.5", slashes because ':' and ',' separate other fields) as
    DICE Train Refiner's timestep_stages text; no field: "", one stage."""
    return ", ".join(fields[0].split("/")) if fields else ""


def held_out_study(validation_seeds: int, test_seeds: int):
    """What the world-1 studies on held-out prompts share (dial, stages): the pack's nodes, the toy model and CLIP
    at OMP_NUM_THREADS threads, the 18 held-out captions, and the noise seeds split into validation 0..V-1 and
    test V..V+T-1. Returns (nodes_map, model, clip, prompts, seeds by split)."""
    nodes_map = setup()
    from toyworld import world
    from toyworld.comfy_objects import load_toy_world

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model, clip, _ = load_toy_world()
    seeds = {"validation": list(range(validation_seeds)),
             "test": list(range(validation_seeds, validation_seeds + test_seeds))}
    return nodes_map, model, clip, world.HELD_OUT_CAPTIONS, seeds


def scale_conditioning(s: float):
    """The paper's scaling baseline as a CONDITIONING transform: every prompt embedding times s."""
    return lambda cond: [[t * s, dict(d)] for t, d in cond]


def token_groups_for(caption: str) -> list[str]:
    from toyworld import world

    ids = world.tokenize(caption)
    return ["start" if i == world.START_ID else "end" if i == world.END_ID else "pad" if i == world.PAD_ID else "word"
            for i in ids]


def sharpening_by_group(bundle, clip_encode, captions) -> dict:
    sums: dict[str, list[float]] = {"start": [], "word": [], "end": [], "pad": []}
    per_position = None
    for cap in captions:
        c = clip_encode(cap)[0][0]
        diff = (bundle.refine(c) - c).abs().mean(-1)[0]
        per_position = diff if per_position is None else per_position + diff
        for g, v in zip(token_groups_for(cap), diff.tolist(), strict=True):
            sums[g].append(v)
    return {"per_group": {g: (statistics.mean(v) if v else 0.0) for g, v in sums.items()},
            "per_position": (per_position / len(captions)).tolist()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="refiner training steps")
    ap.add_argument("--refiner-seeds", type=int, nargs="+", default=None)
    ap.add_argument("--eval-seeds", type=int, default=None, help="noise seeds per held-out prompt")
    ap.add_argument("--batch-size", type=int, default=None, help="refiner training batch (default 32)")
    ap.add_argument("--lr", type=float, default=0.0, help="0: the recipe's")
    ap.add_argument("--samples-per-prompt", type=int, default=None)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.25, 1.5, 2.0, 3.0])
    ap.add_argument("--sweep-seeds", type=int, default=5, help="seeds for the scaling sweep and the negative-prompt study")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--recipe", default="dice-pack", help="training recipe of the DICE Train Refiner node")
    ap.add_argument("--loss", default="auto", choices=["auto", "l1", "l2"])
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    ap.add_argument("--grid", default=None)
    ap.add_argument("--unet", default=None, help="base model weights (default: the shipped toyworld/weights)")
    ap.add_argument("--save-refiner", default=None, help="write the first seed's refiner here (.safetensors)")
    a = ap.parse_args(argv)
    steps = a.steps or (400 if a.quick else 1000)
    refiner_seeds = a.refiner_seeds or ([0] if a.quick else [0, 1])
    eval_seeds = list(range(a.eval_seeds or (6 if a.quick else 20)))
    spp = a.samples_per_prompt or (4 if a.quick else 8)
    a.batch_size = a.batch_size or 32
    if a.quick and a.sweep_seeds > 3:
        a.sweep_seeds = 3
    torch.set_num_threads(a.threads)

    nodes_map = setup()
    import nodes
    from dice_testkit import tiny_models
    from toyworld import world
    from toyworld.comfy_objects import load_toy_world
    from toyworld.evaluate import sample_and_score

    model, clip, vae = load_toy_world(a.unet) if a.unet else load_toy_world()
    encoder = nodes.CLIPTextEncode()

    def encode(text):
        return encoder.encode(clip, text)[0]

    prompts = world.HELD_OUT_CAPTIONS
    refine_node = nodes_map["DiceRefineConditioning"]
    rows: dict[str, dict] = {}

    def run(name, cfg, transform=None, negative=None, note="", seeds=None):
        counter = tiny_models.CallCounter()
        r = sample_and_score(counter.attach(model), clip, prompts, seeds or eval_seeds, cfg, positive_transform=transform,
                             negative=negative)
        images = r["n"]
        rows[name] = {
            "method": name, "cfg": cfg, "nfe": sum(counter.batches) / images, "all": r["all"], "colour": r["colour"],
            "shape": r["shape"], "position": r["position"], "ms_per_image": 1000 * r["seconds"] / images, "pairs": images,
            "note": note, "_latents": r["latents"],
        }
        print(f"  {name:28s} acc {r['all']:.3f} (c {r['colour']:.2f} s {r['shape']:.2f} p {r['position']:.2f}) "
              f"nfe {rows[name]['nfe']:.0f} {rows[name]['ms_per_image']:.1f} ms/img", flush=True)
        return r

    print(f"evaluating {len(prompts)} held-out prompts x {len(eval_seeds)} seeds = {len(prompts) * len(eval_seeds)} pairs",
          flush=True)
    sweep_seeds = eval_seeds[: a.sweep_seeds]
    with torch.inference_mode():
        run("cfg=1", 1.0)
        run("cfg=3", 3.0)
        run("cfg=5 (teacher)", 5.0)
        # The paper's scaling baseline: pick s on a few seeds, then evaluate the best on all pairs.
        sweep = {}
        for s in a.scales:
            sweep[s] = sample_and_score(model, clip, prompts, sweep_seeds, 1.0, positive_transform=scale_conditioning(s))["all"]
        best_scale = max(sweep, key=sweep.get)
        print(f"  scaling sweep on {len(sweep_seeds)} seeds: " + ", ".join(f"c*{k}: {v:.3f}" for k, v in sweep.items()))
        run(f"scaling c*{best_scale} (best)", 1.0, transform=scale_conditioning(best_scale), note="s from a sweep")

    refiners = {}
    for seed in refiner_seeds:
        print(f"training refiner seed {seed}: {steps} steps, batch {a.batch_size}, {len(world.TRAIN_CAPTIONS)} training prompts",
              flush=True)
        settings = NodeSettings(steps, seed, a.batch_size, a.lr, spp, a.recipe, a.loss)
        bundle, loss_img, seconds = train_refiner_with_node(nodes_map, model, clip, world.TRAIN_CAPTIONS, settings)
        refiners[seed] = {"bundle": bundle, "train_seconds": seconds, "final_loss": statistics.mean(bundle.loss_history[-50:])}
        with torch.inference_mode():
            run(f"DICE cfg=1 (seed {seed})", 1.0, transform=lambda cond, b=bundle: refine_node.execute(cond, b, 1.0).args[0],
                note=f"train {seconds:.0f}s")

    first = refiners[refiner_seeds[0]]["bundle"]
    # A negative prompt as uc: a colour the prompt does not ask for ("blue" when asking for red).
    neg_colour = {c: world.COLOURS[(i + 2) % len(world.COLOURS)] for i, c in enumerate(world.COLOURS)}
    negs = [encode(neg_colour[p.split()[1]]) for p in prompts]
    batched_negative = [[torch.cat([n[0][0] for n in negs]), {"pooled_output": torch.cat([n[0][1]["pooled_output"] for n in negs])}]]
    neg_seeds = eval_seeds[: a.sweep_seeds]

    def with_negative_uc():
        it = iter(negs)  # sample_and_score transforms the prompts once each, in order
        return lambda cond: refine_node.execute(cond, first, 1.0, next(it)).args[0]

    with torch.inference_mode():
        neg_results = {
            "DICE, negative as uc": sample_and_score(model, clip, prompts, neg_seeds, 1.0, positive_transform=with_negative_uc()),
            "DICE, empty uc": sample_and_score(model, clip, prompts, neg_seeds, 1.0,
                                               positive_transform=lambda cond: refine_node.execute(cond, first, 1.0).args[0]),
            "cfg=5, same negative": sample_and_score(model, clip, prompts, neg_seeds, 5.0, negative=batched_negative),
            "cfg=1": sample_and_score(model, clip, prompts, neg_seeds, 1.0),
        }
    neg_index = torch.tensor([world.COLOURS.index(neg_colour[p.split()[1]]) for p in prompts]).repeat_interleave(len(neg_seeds))
    negative_summary = {}
    for name, r in neg_results.items():
        shown = world.analyse(world.latent_to_rgb(r["latents"]))["colour"]
        negative_summary[name] = {"all": r["all"], "colour": r["colour"],
                                  "shows_negative_colour": (shown == neg_index).float().mean().item()}

    # Distances to the teacher's samples from the same noise (RGB, mean squared error).
    teacher = world.latent_to_rgb(rows["cfg=5 (teacher)"]["_latents"])
    for r in rows.values():
        r["mse_to_cfg5"] = torch.mean((world.latent_to_rgb(r["_latents"]) - teacher) ** 2).item()
    acc1, acc5 = rows["cfg=1"]["all"], rows["cfg=5 (teacher)"]["all"]
    for r in rows.values():
        r["recovery"] = (r["all"] - acc1) / (acc5 - acc1) if acc5 > acc1 else float("nan")

    pattern = sharpening_by_group(first, encode, prompts)
    best_row = rows[f"scaling c*{best_scale} (best)"]
    dice_rows = [rows[f"DICE cfg=1 (seed {s})"] for s in refiner_seeds]
    summary = {
        "pairs": len(prompts) * len(eval_seeds),
        "train_steps": steps,
        "recipe": a.recipe,
        "batch_size": a.batch_size,
        "recovery_per_seed": {str(s): rows[f"DICE cfg=1 (seed {s})"]["recovery"] for s in refiner_seeds},
        "dice_mse_over_cfg1_mse": statistics.mean(r["mse_to_cfg5"] for r in dice_rows) / rows["cfg=1"]["mse_to_cfg5"],
        "best_scaling": {"scale": best_scale, "all": best_row["all"], "sweep": sweep},
        "dice_minus_best_scaling": min(r["all"] for r in dice_rows) - best_row["all"],
        "negative_prompt": {"pairs": len(prompts) * len(neg_seeds), "results": negative_summary,
                            "negatives": "uc = the encoding of one colour word the prompt does not ask for"},
        "sharpening_pattern": pattern,
        "refiners": {str(s): {"train_seconds": v["train_seconds"], "final_loss": v["final_loss"]} for s, v in refiners.items()},
    }
    result = {"methods": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows.values()], "summary": summary}

    if a.save_refiner:
        from dice_core.fileformat import save_refiner

        save_refiner(a.save_refiner, first, include_optimizer=False)
    if a.grid:
        write_grid(a.grid, rows, prompts, eval_seeds, refiner_seeds[0])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    md = markdown(result)
    if a.md:
        with open(a.md, "w") as f:
            f.write(md)
    print(md)
    return result


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        f"Held-out prompts x noise seeds: {s['pairs']} pairs; KSampler euler, 20 steps; refiner trained {s['train_steps']} steps.",
        "",
        "| method | NFE | acc (all) | colour | shape | position | MSE to cfg=5 samples | recovery | ms/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["methods"]:
        lines.append(f"| {r['method']} | {r['nfe']:.0f} | **{r['all']:.3f}** | {r['colour']:.3f} | {r['shape']:.3f} | "
                     f"{r['position']:.3f} | {r['mse_to_cfg5']:.4f} | {r['recovery']:.2f} | {r['ms_per_image']:.1f} |")
    neg = s["negative_prompt"]
    pg = s["sharpening_pattern"]["per_group"]
    lines += [
        "",
        "- Recovery per refiner seed: " + ", ".join(f"seed {k}: {v:.2f}" for k, v in s["recovery_per_seed"].items()),
        f"- DICE's MSE to the cfg=5 samples is {s['dice_mse_over_cfg1_mse']:.2f}x that of cfg=1.",
        f"- Best scaling baseline: c*{s['best_scaling']['scale']} at {s['best_scaling']['all']:.3f}; "
        f"DICE beats it by {s['dice_minus_best_scaling']:.3f}.",
        f"- Negative prompt ({neg['negatives']}; {neg['pairs']} pairs): "
        + "; ".join(f"{k}: acc {v['all']:.3f}, colour {v['colour']:.3f}, shows the negative colour {v['shows_negative_colour']:.3f}"
                    for k, v in neg["results"].items()) + ".",
        f"- Sharpening pattern, mean |c'-c| per token group: start {pg['start']:.3f}, words {pg['word']:.3f}, "
        f"end {pg['end']:.3f}, padding {pg['pad']:.3f}.",
    ]
    return "\n".join(lines) + "\n"


def write_grid(path: str, rows: dict, prompts, seeds, seed) -> None:
    """Rows of prompts, columns cfg=1 | cfg=5 | DICE, first noise seed; 16 px images upscaled 8x."""
    from PIL import Image, ImageDraw

    from toyworld import world

    cols = [("cfg=1", rows["cfg=1"]), ("cfg=5", rows["cfg=5 (teacher)"]), ("DICE cfg=1", rows[f"DICE cfg=1 (seed {seed})"])]
    picks = prompts[:: max(1, len(prompts) // 6)][:6]
    cell, label_w, head = 96, 230, 24
    img = Image.new("RGB", (label_w + cell * len(cols), head + cell * len(picks)), "white")
    draw = ImageDraw.Draw(img)
    for j, (name, _) in enumerate(cols):
        draw.text((label_w + j * cell + 8, 6), name, fill="black")
    for i, p in enumerate(picks):
        draw.text((6, head + i * cell + cell // 2 - 6), p, fill="black")
        k = prompts.index(p) * len(seeds)
        for j, (_, r) in enumerate(cols):
            rgb = ((world.latent_to_rgb(r["_latents"][k:k + 1])[0] + 1) / 2).clamp(0, 1)
            tile = Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).astype("uint8")).resize((cell - 4, cell - 4), Image.NEAREST)
            img.paste(tile, (label_w + j * cell + 2, head + i * cell + 2))
    img.save(path)


if __name__ == "__main__":
    main()
