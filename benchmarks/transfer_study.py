"""Does a refiner survive a LoRA? (issue 14, transfer)

Users stack LoRAs on the checkpoint a refiner was trained for. The toy stand-in is the shipped style LoRA
(toyworld/weights/loras/dice-toyworld/pastel_style.safetensors, trained by `python -m toyworld.train_lora`): rank 4 on
the transformer blocks' Linear layers, 2.5% of the UNet's parameters, it draws every object in pastel. It is
loaded with ComfyUI's own LoraLoaderModelOnly node at strength 1.0.

Two refiners, trained by the DICE Train Refiner node with the same settings (those of the dial study's
single-scale refiner: w 5, 600 steps, 8 teacher samples per prompt, batch 32, seed 0, the 54 training
captions), differ only in their teacher:
- "base-trained": the base model, as the user trained it before adding the LoRA;
- "LoRA-trained": base + LoRA, retrained for the stack.
Both are then used at cfg 1 on base + LoRA, the model the user now samples with, and scored against CFG on
that same model: recovery = (DICE - cfg1) / (cfg5 - cfg1) in accuracy on the 18 held-out prompts x the
seeds, with 95% bootstrap intervals over prompts, and the paired difference LoRA-trained - base-trained.
Also per method: the pastel level of the images (does the refined prompt keep the LoRA's style?) and the
images' distance to cfg 5's from the same noise, over cfg 1's. For reference, the base-trained refiner on
the base model. No choice is made on these figures (the settings are the dial study's), so every seed is
a test seed.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.transfer_study [--seeds 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

TEACHER_W = 5.0


def paired_bootstrap(correct: dict[str, torch.Tensor], pair: tuple[str, str], draws: int = 4000,
                     seed: int = 0) -> dict:
    """Recovery of pair[0] and pair[1] (DICE methods) against correct["cfg1"] and correct["cfg5"], and of their
    difference, with 95% intervals resampling prompts. Each tensor is (prompts, seeds) correctness."""
    g = torch.Generator().manual_seed(seed)
    n = correct["cfg1"].shape[0]
    picks = torch.randint(n, (draws, n), generator=g)
    per_prompt = {k: v.double().mean(1) for k, v in correct.items()}

    def rec(key: str, rows=None) -> torch.Tensor:
        pick = (lambda t: t[rows].mean(-1)) if rows is not None else (lambda t: t.mean())
        one, five = pick(per_prompt["cfg1"]), pick(per_prompt["cfg5"])
        return (pick(per_prompt[key]) - one) / (five - one).clamp_min(1e-6)

    out = {}
    for key in pair:
        draws_k = rec(key, picks)
        out[key] = {"recovery": float(rec(key)), "ci95": [float(draws_k.quantile(0.025)), float(draws_k.quantile(0.975))]}
    diff = rec(pair[0], picks) - rec(pair[1], picks)
    out["difference"] = {"value": out[pair[0]]["recovery"] - out[pair[1]]["recovery"],
                         "ci95": [float(diff.quantile(0.025)), float(diff.quantile(0.975))],
                         "of": f"{pair[0]} - {pair[1]}"}
    return out


def model_check(trained_on: str, now: str) -> str:
    """What DICE Refine Conditioning's model check (dice_comfy.conditioning.warn_if_other_model) says."""
    from dice_comfy.bridge import PATCHES_MARK

    if trained_on == now:
        return "no warning"
    same_checkpoint = trained_on.split(PATCHES_MARK)[0] == now.split(PATCHES_MARK)[0]
    return "warns: other LoRAs" if same_checkpoint else "warns: other checkpoint"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="refiner training steps (both refiners)")
    p.add_argument("--seeds", type=int, default=20, help="noise seeds per held-out prompt")
    p.add_argument("--json")
    a = p.parse_args(argv)

    from benchmarks import common, toyworld_table

    nodes_map = toyworld_table.setup()
    import comfy.utils

    import nodes
    from dice_comfy.bridge import model_fingerprint
    from toyworld import world
    from toyworld.comfy_objects import LORA_NAME, LORA_PATH, load_toy_world, read_metadata, register_toy_lora_folder
    from toyworld.evaluate import sample_and_score

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    t0 = time.time()
    base, clip, _ = load_toy_world()
    # The LoRA goes through ComfyUI's own loader node, as in a user's graph, from the folder the pack registers.
    register_toy_lora_folder()
    (stacked,) = nodes.LoraLoaderModelOnly().load_lora_model_only(base, LORA_NAME, 1.0)
    assert stacked is not base and len(stacked.patches) == len([k for k in comfy.utils.load_torch_file(LORA_PATH)
                                                                 if k.endswith(".lora_up.weight")])
    settings = toyworld_table.NodeSettings(steps=a.steps, seed=0, batch_size=32, lr=0.0, samples_per_prompt=8)
    refiners, train_s = {}, {}
    for name, teacher in (("base-trained", base), ("LoRA-trained", stacked)):
        refiners[name], _, train_s[name] = toyworld_table.train_refiner_with_node(nodes_map, teacher, clip,
                                                                                 world.TRAIN_CAPTIONS, settings)
        assert refiners[name].recipe["guidance_scale"] == TEACHER_W
    refine = nodes_map["DiceRefineConditioning"]
    seeds = list(range(a.seeds))

    def sample(model, cfg: float, refiner=None) -> dict:
        transform = None if refiner is None else (lambda cond: refine.execute(cond, refiner, 1.0, model=model).args[0])
        with torch.inference_mode():
            r = sample_and_score(model, clip, world.HELD_OUT_CAPTIONS, seeds, cfg, positive_transform=transform)
        rgb = world.latent_to_rgb(r["latents"])
        return {"correct": r["correct"], "rgb": rgb, "pastel_level": float(world.pastel_level(rgb).nanmean())}

    on_lora = {"cfg1": sample(stacked, 1.0), "cfg5": sample(stacked, TEACHER_W)}
    for name, refiner in refiners.items():
        on_lora[name] = sample(stacked, 1.0, refiner)
    on_base = {"cfg1": sample(base, 1.0), "cfg5": sample(base, TEACHER_W), "base-trained": sample(base, 1.0, refiners["base-trained"])}

    def table(runs: dict) -> dict:
        ref = ((runs["cfg1"]["rgb"] - runs["cfg5"]["rgb"]) ** 2).mean()
        return {k: {"accuracy": float(v["correct"].float().mean()), "pastel_level": v["pastel_level"],
                    "distance_to_cfg5_over_cfg1": float(((v["rgb"] - runs["cfg5"]["rgb"]) ** 2).mean() / ref)}
                for k, v in runs.items()}

    lora_meta = read_metadata(LORA_PATH)
    result = {
        "lora": {"file": os.path.relpath(LORA_PATH, common.REPO), "style": lora_meta.get("style"),
                 "rank": int(lora_meta["rank"]), "params": int(lora_meta["params"]), "layers": int(lora_meta["layers"]),
                 "command": lora_meta.get("command")},
        "settings": {"steps": a.steps, "samples_per_prompt": 8, "batch_size": 32, "guidance_scale": TEACHER_W, "seed": 0},
        "pairs": len(world.HELD_OUT_CAPTIONS) * len(seeds),
        "on_lora": table(on_lora),
        "on_lora_recovery": paired_bootstrap({k: v["correct"] for k, v in on_lora.items()}, ("LoRA-trained", "base-trained")),
        "on_base": table(on_base),
        "on_base_recovery": paired_bootstrap({k: v["correct"] for k, v in on_base.items()}, ("base-trained", "base-trained"))[
            "base-trained"],
        "refine_time_check": {name: model_check(bundle.base_model_hash, model_fingerprint(stacked))
                              for name, bundle in refiners.items()},
        "fingerprints": {"base": model_fingerprint(base), "base + LoRA": model_fingerprint(stacked),
                         **{f"{name} refiner's file": bundle.base_model_hash for name, bundle in refiners.items()}},
        "train_s": train_s, "seconds": time.time() - t0,
    }
    print(json.dumps({k: result[k] for k in ("on_lora", "on_lora_recovery", "on_base", "on_base_recovery")}, indent=1),
          flush=True)
    return common.write_json(result, a.json)


if __name__ == "__main__":
    main()
