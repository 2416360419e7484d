"""Does a T5 family's refiner need padded tokens? Measured on tiny PixArt-alpha (issue 12's padding question).

ComfyUI's T5 emits no padding: the words and an end token. PixArt-alpha was trained on 120 tokens, so
the pack's first PixArt path padded every prompt to 120 with the end token's embedding, giving the
refiner 116 extra rows to write guidance into. That also changes what the model sees at strength 0.
This study trains both ways on the same models and the same teacher data:
- "pad 120": the student sees prompts padded to 120 tokens;
- "no padding": the student sees the encoder's own tokens, as the teacher does.

Each arm is scored per prompt by its held-out distillation loss over the unrefined prompt's (the
teacher's cond at cfg 1), so both arms share one denominator; below 1 means the refiner helps. Also
reported: the padded prompt at strength 0 over the unpadded one (what padding alone does).
Prompts unseen in training are split into validation (the choice is made there) and test (reported
once), over several seeded tiny models; the 95% intervals bootstrap (model, prompt) pairs.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.padding_study [--models 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from benchmarks import common

GUIDANCE = 5.0
ARMS = {"pad 120": 120, "no padding": None}


def per_prompt_loss(bundle, denoiser, bank, data, cfg, alpha: float, num_prompts: int) -> torch.Tensor:
    """Mean distillation loss of each prompt's teacher states (evaluate_distillation, kept per prompt)."""
    from dice_core.refiner import refine
    from dice_core.training import distillation_loss

    total, count = torch.zeros(num_prompts), torch.zeros(num_prompts)
    with torch.no_grad():
        for j in torch.arange(len(data)).split(16):
            x, sigma, idx = data.x[j], data.sigma[j], data.idx[j]
            c = refine(bundle.module, bank.c[idx], bank.uc, alpha, bundle.keep_rule)
            loss = distillation_loss(denoiser.student(x, sigma, idx, c).float(), data.target[j].float(), sigma, cfg)
            total.index_add_(0, idx, loss)
            count.index_add_(0, idx, torch.ones_like(loss))
    return total / count


def train_arm(patcher, prompts, uc, pad_to, cfg):
    """What dice_comfy.session.run_training does, with the padding chosen here instead of by the family."""
    from dice_comfy import bridge, session
    from dice_core.families import family_info
    from dice_core.training import PromptBank, teacher_trajectories, train_refiner

    info = dataclasses.replace(family_info("PixArtAlpha"), pad_to=pad_to)
    bundle = session.new_bundle(uc[0].shape[-1], cfg.seed, info, uc[0], None)
    denoiser = bridge.ComfyDenoiser(patcher, prompts, uc, torch.device("cpu"), pad_to, bundle.pad_token, None)
    bank = PromptBank(c=denoiser.student_bank().float(), uc=bundle.pad(uc[0]).float(), lengths=denoiser.student_lengths)
    data = teacher_trajectories(denoiser, len(prompts), session.latent_shape(patcher, 320, 320), cfg)
    return train_refiner(bundle, denoiser, bank, data, cfg).bundle


def evaluate_model(patcher, prompts, cfg, eval_cfg) -> dict:
    """Train both arms on one model; each arm's per-prompt losses on the unseen prompts at alpha 0 and 1."""
    from dice_comfy import bridge, session
    from dice_core.training import PromptBank, teacher_trajectories

    train, evaluation, uc = prompts
    with bridge.trainable_view(patcher, False):
        bundles = {arm: train_arm(patcher, train, uc, pad_to, cfg) for arm, pad_to in ARMS.items()}
        plain = bridge.ComfyDenoiser(patcher, evaluation, uc, torch.device("cpu"), None, None, None)
        with torch.no_grad():
            data = teacher_trajectories(plain, len(evaluation), session.latent_shape(patcher, 320, 320), eval_cfg)
        figures = {}
        for arm, bundle in bundles.items():
            denoiser = bridge.ComfyDenoiser(patcher, evaluation, uc, torch.device("cpu"), bundle.pad_to, bundle.pad_token, None)
            bank = PromptBank(c=denoiser.student_bank().float(), uc=bundle.pad(uc[0]).float())
            figures[arm] = {alpha: per_prompt_loss(bundle, denoiser, bank, data, eval_cfg, alpha, len(evaluation))
                            for alpha in (0.0, 1.0)}
    return figures


def bootstrap(values: torch.Tensor, draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    g = torch.Generator().manual_seed(seed)
    means = values[torch.randint(len(values), (draws, len(values)), generator=g)].mean(1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=4, help="seeded tiny PixArt-alpha models")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--json")
    a = p.parse_args(argv)

    harness = common.setup("cpu")
    from dice_core.training import TrainConfig
    from dice_testkit import tiny_models
    from dice_testkit.tiny_families import pixart_alpha as family

    train_words, unseen = tiny_models.vocab_split(n_train=20, n_held_out=7)
    splits = {"validation": list(range(3)), "test": list(range(3, 7))}
    # Every third training prompt drops its last word, so the prompts come in two lengths, as text does.
    train = [family.prompt(w[:2] if i % 3 == 0 else w) for i, w in enumerate(train_words)]
    evaluation = [family.prompt(w) for w in unseen]
    uc = family.prompt(())
    cfg = TrainConfig.from_recipe("dice-pack", steps=a.steps, batch_size=4, teacher_steps=6, samples_per_prompt=2, seed=0,
                                  guidance_scale=GUIDANCE, loss="l2", warmup=5, lr=1e-3)
    eval_cfg = TrainConfig.from_recipe("dice-pack", teacher_steps=4, samples_per_prompt=2, seed=1234, batch_size=8, loss="l2",
                                       guidance_scale=GUIDANCE)

    rows = []  # one per (model, unseen prompt)
    for model_seed in range(a.models):
        patcher = tiny_models.pixart_alpha(seed=model_seed)
        figures = evaluate_model(patcher, (train, evaluation, uc), cfg, eval_cfg)
        unrefined = figures["no padding"][0.0]
        for i in range(len(evaluation)):
            split = "validation" if i in splits["validation"] else "test"
            rows.append({"model_seed": model_seed, "prompt": i, "split": split,
                         "pad_only_over_unrefined": float(figures["pad 120"][0.0][i] / unrefined[i]),
                         **{f"{arm}_over_unrefined": float(figures[arm][1.0][i] / unrefined[i]) for arm in ARMS}})
        print(json.dumps([r for r in rows if r["model_seed"] == model_seed]), flush=True)

    def summary(split: str) -> dict:
        chosen = [r for r in rows if r["split"] == split]
        out = {"pairs": len(chosen)}
        for key in ("pad_only_over_unrefined", *(f"{arm}_over_unrefined" for arm in ARMS)):
            v = torch.tensor([r[key] for r in chosen])
            out[key] = {"mean": float(v.mean()), "ci95": bootstrap(v)}
        diff = torch.tensor([r["pad 120_over_unrefined"] - r["no padding_over_unrefined"] for r in chosen])
        out["pad_minus_no_padding"] = {"mean": float(diff.mean()), "ci95": bootstrap(diff)}
        return out

    validation = summary("validation")
    choice = min(ARMS, key=lambda arm: validation[f"{arm}_over_unrefined"]["mean"])
    result = {"family": "PixArtAlpha (tiny, seeded random weights)", "models": a.models, "steps": a.steps,
              "validation": validation, "chosen_on_validation": choice, "test": summary("test"), "rows": rows,
              "machine": common.machine(), "comfyui": harness.comfyui_version()}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return common.write_json(result, a.json)


if __name__ == "__main__":
    main()
