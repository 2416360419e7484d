"""Every model family on its full-size architecture (random weights): DICE/CFG sampling time, and one
training step of the node's loop against a hand-written loop. Prints one JSON line per family.

The architectures come from dice_testkit/tiny_families/<family>.py (build(full_size=True): the published
config as comfy/model_detection.py reads it); --tiny uses the tiny test models instead (the CPU smoke
test). Sampling: KSampler euler at cfg 5 on (c, uc) against cfg 1 on the refined c, same seed and
steps, model rows counted. Training: the node's train_refiner step against refine -> calc_cond_batch
-> loss -> backward -> AdamW written out by hand, on the same cached teacher state.
  python -m benchmarks.gpu_families --device cuda --dtype bf16 --families sd3 wan21 qwen_image
  python -m benchmarks.gpu_families --device cpu --tiny --families sd3
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks import common

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def sampling(family, patcher, bundle, refine_node, steps: int, device: str) -> dict:
    import nodes
    from dice_testkit import tiny_models

    pos, neg = [family.prompt((0, 3, 6))], [family.prompt(())]
    latent = {"samples": family.empty_latent()}
    rows = {}

    def sample(cfg, cond):
        counter = tiny_models.CallCounter()
        nodes.common_ksampler(counter.attach(patcher), 0, steps, cfg, "euler", "normal", cond, neg, latent)
        rows[cfg] = sum(counter.batches)

    refined = []
    sample(5.0, pos)  # warm-up, and the same call ComfyUI makes
    t_cfg = _timed(lambda: sample(5.0, pos), device)
    t_refine = _timed(lambda: refined.append(refine_node.execute(pos, bundle, 1.0, model=patcher).args[0]), device)
    t_dice = _timed(lambda: sample(1.0, refined[0]), device)
    return {"cfg_s": t_cfg, "dice_s": t_dice + t_refine, "refine_s": t_refine, "ratio": (t_dice + t_refine) / t_cfg,
            "rows_cfg": rows[5.0], "rows_dice": rows[1.0]}


def training(family, patcher, bundle, device: str, steps: int) -> dict:
    import comfy.sampler_helpers
    import comfy.samplers

    from dice_comfy import bridge
    from dice_core.refiner import refine
    from dice_core.training import PromptBank, TrainConfig, cfg_combine, distillation_loss, train_refiner

    prompts, uc = [family.prompt((0, 3, 6)), family.prompt((1, 4, 7))], family.prompt(())
    denoiser = bridge.ComfyDenoiser(patcher, prompts, uc, torch.device(device), bundle.pad_to, bundle.pad_token)
    bank = PromptBank(c=denoiser.student_bank().float(), uc=uc[0].float(), lengths=denoiser.student_lengths)
    x0 = family.empty_latent(2).to(device) + torch.randn_like(family.empty_latent(2).to(device))
    sigma = torch.full((2,), float(patcher.model.model_sampling.percent_to_sigma(0.5)), device=device)
    idx = torch.arange(2)
    cfg = TrainConfig.from_recipe("dice-pack", steps=steps, batch_size=2, loss="l2")
    with bridge.trainable_view(patcher):
        x0_c, x0_uc = denoiser.teacher(x0, sigma, idx)
        target = cfg_combine(x0_c, x0_uc, cfg.guidance_scale)

        def node_step():
            from dice_core.training import TrainingData

            data = TrainingData(x=x0, idx=idx, sigma=sigma, target=target)
            bundle.train_step, bundle.optimizer_state, bundle.loss_history = 0, None, []
            train_refiner(bundle, denoiser, bank, data, cfg)

        module = bundle.module
        opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr)

        def reference_step():
            for _ in range(steps):
                c = refine(module, bank.c.to(device), bank.uc.to(device), 1.0, bundle.keep_rule)
                entry = [c[:, : int(bank.lengths.min())], prompts[0][1]]
                conds = comfy.samplers.encode_model_conds(patcher.model.extra_conds, comfy.sampler_helpers.convert_cond([entry]),
                                                          x0, x0.device, "positive", latent_image=x0)
                # The same saved-activation copies the node makes for in-place residual models (Chroma, LTXV, ...).
                with bridge.own_copies_of_saved_activations(denoiser.inplace_residuals):
                    pred = comfy.samplers.calc_cond_batch(patcher.model, [conds], x0, sigma, patcher.model_options)[0]
                loss = distillation_loss(pred.float(), target.float(), sigma, cfg).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        module.to(device).train().requires_grad_(True)
        node_step()  # warm-up
        t_node = _timed(node_step, device) / steps
        module.train().requires_grad_(True)
        reference_step()
        t_ref = _timed(reference_step, device) / steps
    return {"node_step_s": t_node, "reference_step_s": t_ref, "node_over_reference": t_node / t_ref}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", nargs="+", required=True, help="module names in dice_testkit/tiny_families")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    ap.add_argument("--steps", type=int, default=4, help="sampling steps, and training steps timed")
    ap.add_argument("--tiny", action="store_true", help="the tiny test models (CPU smoke test)")
    a = ap.parse_args()
    harness = common.setup(a.device)
    nodes_map = harness.load_pack()
    import importlib

    from dice_comfy import session
    from dice_core.families import family_info
    from dice_core.refiner import count_parameters

    for name in a.families:
        family = importlib.import_module(f"dice_testkit.tiny_families.{name}")
        result = {"family": family.FAMILY, "full_size": not a.tiny, "device": a.device, "dtype": "fp32" if a.tiny else a.dtype,
                  "machine": common.machine()}
        try:
            patcher = family.build(dtype=DTYPES[a.dtype] if not a.tiny else torch.float32, full_size=not a.tiny)
            info = family_info(family.FAMILY)
            bundle = session.new_bundle(family.EMBED_DIM, 0, info, family.prompt(())[0].float(), None)
            result["model_parameters"] = count_parameters(patcher.model.diffusion_model)
            with torch.inference_mode():
                result.update(sampling(family, patcher, bundle, nodes_map["DiceRefineConditioning"], a.steps, a.device))
            result.update(training(family, patcher, bundle, a.device, a.steps))
        except torch.OutOfMemoryError as e:
            result["oom"] = str(e).splitlines()[0]
        except NotImplementedError as e:  # a family whose full-size build lives in another benchmark
            result["skipped"] = str(e)
        print(json.dumps(result), flush=True)
        patcher = None
        if a.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
