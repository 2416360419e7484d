"""Train the toy world's style LoRA: the base UNet fine-tuned, through low-rank adapters only, to draw
every object in the "pastel" style (world.STYLES: each palette colour mixed with white).

It is the stand-in for what users stack on a checkpoint: a LoRA-sized change of style. DICE's transfer
study (benchmarks/transfer_study.py) asks whether a refiner trained on the base model still works on the
base + this LoRA, against a refiner trained on base + LoRA.

The adapters sit on every Linear layer of the transformer blocks (self- and cross-attention q/k/v/out and
the feed-forward), as SD1.5 LoRAs usually do: W' = W + (alpha / rank) * up @ down. The base weights stay
frozen. Objective, data and caption noise are the base model's (toyworld/train_base.py): v-weighted eps
loss on ComfyUI's SD1.5 model_sampling, training combinations only, caption noise 0.30, 10% null
captions; only the renders are pastel. The file uses ComfyUI's generic LoRA keys
("diffusion_model.<module>.lora_up.weight" / ".lora_down.weight" / ".alpha"), so ComfyUI's own
LoraLoaderModelOnly (comfy.sd.load_lora_for_models) applies it; no DICE code is involved in loading it.

    python -m toyworld.train_lora --seed 0 --steps 300 --threads 1 --eval-seeds 10
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import torch

from dice_comfy.setup import setup_comfy
from dice_core.refiner import append_dims

from . import world
from .text_encoder import ToyTextEncoder

HERE = os.path.dirname(os.path.abspath(__file__))


def lora_targets(diffusion_model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linear layers inside transformer blocks, by module name (attn1, attn2, ff)."""
    return {name: m for name, m in diffusion_model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".transformer_blocks." in name}


class LowRankAdapters(torch.nn.Module):
    """One (down, up) pair per target layer. up starts at zero, so step 0 is exactly the base model."""

    def __init__(self, targets: dict[str, torch.nn.Linear], rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.names = sorted(targets)
        self.rank, self.alpha = rank, alpha
        self.down = torch.nn.ParameterList()
        self.up = torch.nn.ParameterList()
        for name in self.names:
            out_dim, in_dim = targets[name].weight.shape
            self.down.append(torch.nn.Parameter(torch.randn(rank, in_dim, generator=generator) / in_dim ** 0.5))
            self.up.append(torch.nn.Parameter(torch.zeros(out_dim, rank)))

    def patched_weights(self, targets: dict[str, torch.nn.Linear]) -> dict[str, torch.Tensor]:
        """Parameter name -> W + (alpha / rank) * up @ down, for torch.func.functional_call."""
        scale = self.alpha / self.rank
        return {f"{name}.weight": targets[name].weight + scale * (up @ down)
                for name, down, up in zip(self.names, self.down, self.up)}

    def comfy_state_dict(self) -> dict[str, torch.Tensor]:
        """ComfyUI's generic LoRA format, keyed by the model's own module names."""
        sd = {}
        for name, down, up in zip(self.names, self.down, self.up):
            key = f"diffusion_model.{name}"
            sd[f"{key}.lora_down.weight"] = down.detach().float().contiguous()
            sd[f"{key}.lora_up.weight"] = up.detach().float().contiguous()
            sd[f"{key}.alpha"] = torch.tensor(float(self.alpha))
        return sd


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--style", default="pastel", choices=sorted(s for s in world.STYLES if s != "plain"))
    p.add_argument("--noise", type=float, default=0.30, help="caption noise, per attribute (as the base model)")
    p.add_argument("--drop", type=float, default=0.10, help="share of null captions (as the base model)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--base", default=os.path.join(HERE, "weights", "base_unet.safetensors"))
    p.add_argument("--text-encoder", default=os.path.join(HERE, "weights", "text_encoder.safetensors"))
    p.add_argument("--out", default=None, help="default: the shipped file, comfy_objects.LORA_PATH")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-seeds", type=int, default=0,
                   help="after training: cfg 1 and 5 accuracy and pastel level on the held-out prompts x this many seeds, "
                        "base and base + LoRA, written into the file's metadata")
    return p.parse_args(argv)


def train(a, command: str) -> tuple[LowRankAdapters, dict]:
    from . import comfy_objects as co

    te = ToyTextEncoder.load(a.text_encoder)
    E, U = te.embedding_table()  # the encoder is frozen: one table for all 72 captions + null
    model = co.load_base_model(a.base)
    dm = model.diffusion_model.eval().requires_grad_(False)  # frozen: only the adapters train
    ms = model.model_sampling
    sigmas = ms.sigmas.float().cpu()
    wtab = (1 + sigmas ** 2) / (1 + sigmas ** 2).mean()  # the base model's v weighting
    targets = lora_targets(dm)
    g = torch.Generator().manual_seed(a.seed)
    adapters = LowRankAdapters(targets, a.rank, a.alpha, g)
    opt = torch.optim.AdamW(adapters.parameters(), lr=a.lr, weight_decay=0.0)
    # Warm-up, then linear decay to 0: the last weights are the saved ones, so they should not be a noisy step.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / max(1, a.warmup), max(0.0, (a.steps - i) / max(1, a.steps - a.warmup))))
    n_params = sum(p.numel() for p in adapters.parameters())
    print(f"LoRA rank {a.rank} on {len(targets)} layers: {n_params} parameters "
          f"({n_params / sum(p.numel() for p in dm.parameters()):.1%} of the UNet); {command}", flush=True)
    run, t0 = 0.0, time.time()
    for step in range(a.steps):
        img, _, cap = world.train_batch(a.batch, g, a.noise, style=a.style)
        x0 = world.rgb_to_latent(img)
        c = E[cap]
        drop = torch.rand(a.batch, generator=g) < a.drop
        c = torch.where(drop[:, None, None], U.expand_as(c), c)
        t = torch.randint(0, len(sigmas), (a.batch,), generator=g)
        s = sigmas[t]
        noise = torch.randn(x0.shape, generator=g)
        x = x0 + append_dims(s, x0.ndim) * noise
        pred = torch.func.functional_call(dm, adapters.patched_weights(targets),
                                          (ms.calculate_input(s, x), ms.timestep(s).float()), {"context": c})
        loss = ((pred - noise).pow(2).mean((1, 2, 3)) * wtab[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run = 0.95 * run + 0.05 * loss.item()
        if step % a.log_every == 0 or step == a.steps - 1:
            print(f"step {step} loss {run / (1 - 0.95 ** (step + 1)):.4f} t={time.time() - t0:.0f}s", flush=True)
    return adapters, {"train_time_s": f"{time.time() - t0:.0f}", "final_loss": f"{run / (1 - 0.95 ** a.steps):.5f}",
                      "params": str(n_params), "layers": str(len(targets))}


def evaluate(lora_path: str, base_path: str, text_encoder_path: str, seeds: int) -> dict:
    """cfg 1 and cfg 5 on the held-out prompts, base and base + LoRA (ComfyUI's LoRA loader), with accuracy and
    the pastel level of the images: the LoRA must change the style and keep CFG's effect."""
    import comfy.sd
    from safetensors.torch import load_file

    from . import comfy_objects as co
    from .evaluate import sample_and_score

    base = co.load_model_patcher(base_path)
    lora_model, _ = comfy.sd.load_lora_for_models(base, None, load_file(lora_path), 1.0, 0)
    clip = co.load_clip(text_encoder_path)
    out = {}
    for label, model in (("base", base), ("lora", lora_model)):
        for cfg in (1.0, 5.0):
            r = sample_and_score(model, clip, world.HELD_OUT_CAPTIONS, list(range(seeds)), cfg)
            level = float(world.pastel_level(world.latent_to_rgb(r["latents"])).nanmean())
            out[f"{label}_cfg{cfg:g}"] = {"all": round(r["all"], 4), "pastel_level": round(level, 4)}
            print(f"{label} cfg {cfg:g}: accuracy {r['all']:.3f} pastel level {level:.3f} (n={r['n']})", flush=True)
    return out


def main(argv=None):
    a = parse_args(argv)
    command = "python -m toyworld.train_lora " + shlex.join(sys.argv[1:] if argv is None else argv)
    setup_comfy(pytorch_attention=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    from dice_core.fileformat import atomic_save_safetensors

    from .comfy_objects import LORA_PATH
    from .train_base import _sha256

    a.out = a.out or LORA_PATH
    adapters, stats = train(a, command)
    meta = {"format": "comfyui-lora (generic diffusion_model.* keys)", "style": a.style, "seed": str(a.seed),
            "steps": str(a.steps), "batch": str(a.batch), "lr": str(a.lr), "rank": str(a.rank), "alpha": str(a.alpha),
            "caption_noise": str(a.noise), "null_drop": str(a.drop), "threads": str(a.threads), "command": command,
            "base_unet_sha256": _sha256(a.base), "torch": torch.__version__, **stats}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    atomic_save_safetensors(adapters.comfy_state_dict(), a.out, meta)
    print(f"saved {a.out}", flush=True)
    if a.eval_seeds:
        import json
        meta["evaluation"] = json.dumps({"seeds": a.eval_seeds, **evaluate(a.out, a.base, a.text_encoder, a.eval_seeds)})
        atomic_save_safetensors(adapters.comfy_state_dict(), a.out, meta)


if __name__ == "__main__":
    main()
