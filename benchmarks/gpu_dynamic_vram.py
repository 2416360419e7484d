"""Does DICE Train Refiner follow ComfyUI 0.33's model management on a GPU? A correctness check, not a speed figure.

ComfyUI 0.33 loads checkpoints as ModelPatcherDynamic on GPUs (dynamic VRAM, comfy-aimdo). That
patcher streams weights per op and cannot be trained through, so the pack trains through core's
non-dynamic delegate (dice_comfy/internals.trainable_patcher). This loads the tiny SD1.5
checkpoint through ComfyUI's own checkpoint loader, as Load Checkpoint does, trains a few steps with
the node, then samples with the shared MODEL and reports:
- whether the loaded patcher was dynamic, and which patcher trained;
- that the shared model's weights are bit-identical before and after, and it is still dynamic;
- that training improved the held-out distillation loss, and that cfg=1 sampling afterwards works;
- peak GPU memory.
On the CPU (or 0.3.75) it runs the same steps and reports dynamic: false.
Prints one JSON line.
  COMFYUI_PATH=/path/to/ComfyUI-0.33 python -m benchmarks.gpu_dynamic_vram --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from benchmarks import common


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    harness = common.setup(a.device)
    nodes_map = harness.load_pack()
    print(json.dumps(check(a, harness, nodes_map)), flush=True)


def _weights_digest(patcher) -> list[float]:
    sd = patcher.model.diffusion_model.state_dict()
    return [float(sd[k].float().sum()) for k in sorted(sd)[:: max(1, len(sd) // 16)]]


def check(a, harness, nodes_map) -> dict:
    import comfy.sd

    import nodes
    from dice_comfy import internals
    from dice_testkit import make_tiny_checkpoint, tiny_models

    path = make_tiny_checkpoint.ensure_tiny_checkpoint(os.path.join(tempfile.gettempdir(), "dice_tiny_sd15.safetensors"))
    model, clip, _vae = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)[:3]
    dynamic = bool(getattr(model, "is_dynamic", lambda: False)())
    trains_through = internals.trainable_patcher(model)
    before = _weights_digest(model)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.inference_mode():
        refiner, _loss_plot, _pattern = nodes_map["DiceTrainRefiner"].execute(
            model=model, clip=clip, prompts="a red cube\na blue sphere\na green cone\na yellow torus", prompts_file="(none)",
            steps=a.steps, batch_size=4, guidance_scale=5.0, recipe="dice-pack", learning_rate=0.0, loss="auto", seed=0,
            width=64, height=64, samples_per_prompt=2, teacher_steps=4, save_every=0, filename_prefix="dice_gpu_check",
            gradient_checkpointing=False, autocast="bf16").args
        seconds = time.perf_counter() - t0
        (pos,) = nodes.CLIPTextEncode().encode(clip, "a red sphere")
        (neg,) = nodes.CLIPTextEncode().encode(clip, "")
        refined = nodes_map["DiceRefineConditioning"].execute(pos, refiner, 1.0).args[0]
        counter = tiny_models.CallCounter()
        (out,) = nodes.common_ksampler(counter.attach(model), 1, 4, 1.0, "euler", "normal", refined, neg,
                                       {"samples": torch.zeros(1, 4, 8, 8)})
    after = _weights_digest(model)
    return {
        "check": "dynamic_vram_training",
        "comfyui": harness.comfyui_version(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "dynamic": dynamic,
        "trained_through": "non-dynamic delegate" if trains_through is not model else "the shared patcher",
        "shared_model_dynamic_after": bool(getattr(model, "is_dynamic", lambda: False)()),
        "shared_weights_unchanged": before == after,
        "final_loss": float(refiner.loss_history[-1]),
        "first_loss": float(refiner.loss_history[0]),
        "train_seconds": round(seconds, 2),
        "cfg1_rows_per_step": counter.batches,
        "sample_finite": bool(torch.isfinite(out["samples"]).all()),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
    }


if __name__ == "__main__":
    main()
