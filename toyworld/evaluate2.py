"""World 2's evaluation: ComfyUI's own sampler (toyworld/evaluate.py's sampling, unchanged) scored by world 2's
strict analyser, on world2.VALIDATION_CAPTIONS only. The test captions are reserved for the final report, so
this module offers no way to pick them: choices (snapshot, recipe, steps) are made on validation.

Pairs are evaluate.py's: (prompt, seed) starts from the noise a batch-1 KSampler draws with that seed.

    python -m toyworld.evaluate2 --unet FILE --seeds 4 --cfg 1 3 5 --threads 1 [--record]
    python -m toyworld.evaluate2 --unet FILE --seeds 2 --cfg 1 5 --captions training   # does it fit training scenes?

--record writes the table into FILE's metadata ("evaluation", "evaluation_command"), tensors unchanged.
"""
from __future__ import annotations

import json
import shlex
import sys

import torch

from . import world2
from .evaluate import SamplingOptions, conditioning, sample_latents

METRICS = ("correct", "binding", "valid", "relation", "colour", "shape")


def sample_and_score2(model, clip_or_cond_fn, prompts, seeds, cfg, sampling: SamplingOptions | None = None,
                      positive_transform=None, negative=None) -> dict:
    """One image per (prompt, seed) with nodes.common_ksampler at world 2's 24x24 latent, analysed strictly.
    Returns rates over all pairs of METRICS (correct is the accuracy; binding, valid as world2.score defines
    them), "saturation" (mean share of pixels out of range, before clamping), "saturation_on_objects" and
    "saturation_on_background" (the same share split by world2.saturation_sites), "peak" (the largest channel
    value of any image), "correct_if_clamped", "binding_if_clamped" and "valid_if_clamped" (a diagnostic: the
    rates on the images clamped to [-1, 1], which hides over-driven pixels), "rejected" (count per
    world2.REJECT_REASONS), "n", "seconds", "latents" (n * len(seeds), 4, 24, 24), row i * len(seeds) + j
    for (prompts[i], seeds[j]), and "analysis" and "scores", world2.analyse's and world2.score's per-image
    results in the same order."""
    sampling = sampling or SamplingOptions()
    prompts, seeds = list(prompts), list(seeds)
    specs = world2.caption_targets(prompts).repeat_interleave(len(seeds), 0)
    # Each caption its own noise: world 2 is scored on 1 to 4 seeds, and one shared noise image per seed would make
    # all 102 captions one draw of where the objects go. Captions sampled sampling.prompts_per_call at a time get the
    # noise of their place in the whole list, so the images do not depend on how the list is split.
    per_call = sampling.prompts_per_call or len(prompts)
    parts, seconds = [], 0.0
    for start in range(0, len(prompts), per_call):
        positive, negative_part = conditioning(clip_or_cond_fn, prompts[start:start + per_call], sampling, positive_transform,
                                               negative)
        part, part_seconds = sample_latents(model, positive, negative_part, seeds, cfg, sampling, world2.RES,
                                            first_index=start)
        parts.append(part)
        seconds += part_seconds
        negative = negative_part  # encoded once (conditioning encodes the empty prompt when none is given), then reused
    latents = torch.cat(parts)
    images = world2.latent_to_rgb(latents)
    analysis = world2.analyse(images)
    scores = world2.score(analysis, specs)
    sites = world2.saturation_sites(images)
    # A diagnostic, never a score: the same images clamped to [-1, 1], as a VAE decode to 8-bit would show them, so
    # that "over-driven but right" is told apart from "wrong" (the strict analyser rejects both).
    if_clamped = world2.score(world2.analyse(images.clamp(-1, 1)), specs)
    reasons = torch.bincount(analysis["reason"], minlength=len(world2.REJECT_REASONS))
    return {**{k: scores[k].float().mean().item() for k in METRICS},
            "saturation": analysis["saturation"].mean().item(),
            "saturation_on_objects": sites["on_objects"].mean().item(),
            "saturation_on_background": sites["on_background"].mean().item(), "peak": sites["peak"].max().item(),
            **{f"{k}_if_clamped": if_clamped[k].float().mean().item() for k in ("correct", "binding", "valid")},
            "rejected": {name: int(c) for name, c in zip(world2.REJECT_REASONS, reasons) if name != "ok"},
            "n": len(specs), "seconds": seconds, "latents": latents, "analysis": analysis, "scores": scores}


SATURATION_KEYS = ("saturation", "saturation_on_objects", "saturation_on_background", "peak", "correct_if_clamped",
                   "binding_if_clamped", "valid_if_clamped")
CAPTION_SETS = {"validation": lambda: world2.VALIDATION_CAPTIONS, "training": world2.training_check_captions}


def validation_table(model, clip, seeds, cfgs, sampling: SamplingOptions | None = None,
                     captions: str = "validation") -> list[dict]:
    """sample_and_score2 on world2.VALIDATION_CAPTIONS (or captions="training": world2.training_check_captions) for
    each cfg; rows without latents, rounded to 4 places."""
    rows = []
    for cfg in cfgs:
        r = sample_and_score2(model, clip, CAPTION_SETS[captions](), seeds, cfg, sampling)
        rows.append({"cfg": float(cfg), **{k: round(r[k], 4) for k in (*METRICS, *SATURATION_KEYS)},
                     "rejected": r["rejected"], "n": r["n"], "seconds": round(r["seconds"], 1)})
    return rows


def format_row(row: dict) -> str:
    return (f"cfg {row['cfg']:.1f}: accuracy {row['correct']:.3f} binding {row['binding']:.3f} valid {row['valid']:.3f} "
            f"relation {row['relation']:.3f} colour {row['colour']:.3f} shape {row['shape']:.3f} "
            f"saturation {row['saturation']:.4f} (objects {row['saturation_on_objects']:.4f}, "
            f"background {row['saturation_on_background']:.4f}, peak {row['peak']:.2f}); "
            f"clamped to [-1, 1]: accuracy {row['correct_if_clamped']:.3f} binding "
            f"{row['binding_if_clamped']:.3f} valid {row['valid_if_clamped']:.3f} "
            f"(n={row['n']}, {row['seconds']:.0f}s; rejected {row['rejected']})")


def record_evaluation(path: str, rows: list[dict], command: str) -> None:
    """Adds the table to a base_unet file's metadata, keeping its tensors and other metadata as they are."""
    from safetensors.torch import load_file, save_file

    from .comfy_objects import read_metadata

    meta = read_metadata(path)
    meta.update({"evaluation": json.dumps(rows), "evaluation_command": command,
                 "evaluation_prompts": f"world2.VALIDATION_CAPTIONS ({len(world2.VALIDATION_CAPTIONS)})"})
    save_file(load_file(path), path, metadata=meta)


def evaluate_file(unet_path: str, text_encoder_path: str, seeds, cfgs, captions: str = "validation") -> list[dict]:
    """The validation table of a world-2 base_unet file (or the training-scene check's), printed as it goes."""
    from . import comfy_objects as co

    model, clip, _ = co.load_toy_world(unet_path, text_encoder_path)
    print(f"{unet_path}: {len(CAPTION_SETS[captions]())} {captions} captions x seeds {list(seeds)}, euler 20 steps",
          flush=True)
    rows = []
    for cfg in cfgs:
        rows += validation_table(model, clip, seeds, [cfg], captions=captions)
        print(format_row(rows[-1]), flush=True)
    return rows


def main(argv=None):
    import argparse

    from dice_comfy.setup import setup_comfy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--unet", default=None, help="world-2 base_unet safetensors (default: the shipped one)")
    p.add_argument("--text-encoder", default=None, help="default: the shipped world-2 encoder")
    p.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per validation caption")
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--record", action="store_true", help="write the table into the file's metadata (validation only)")
    p.add_argument("--captions", choices=sorted(CAPTION_SETS), default="validation",
                   help="validation: world2.VALIDATION_CAPTIONS; training: world2.training_check_captions, training "
                   "scenes, to tell fitting from generalising")
    a = p.parse_args(argv)
    if a.record and a.captions != "validation":
        p.error("--record writes the validation table only")
    setup_comfy(pytorch_attention=True)
    torch.set_num_threads(a.threads)
    from . import comfy_objects as co

    unet = a.unet or co.WORLD2_UNET_PATH
    rows = evaluate_file(unet, a.text_encoder or co.WORLD2_TEXT_ENCODER_PATH, range(a.seeds), a.cfg, a.captions)
    if a.record:
        record_evaluation(unet, rows, "python -m toyworld.evaluate2 " + shlex.join(sys.argv[1:] if argv is None else argv))
        print(f"recorded in {unet}")


if __name__ == "__main__":
    main()
