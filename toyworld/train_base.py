"""Train the toy world's base UNet: the ComfyUI UNetModel inside
`comfy.supported_models.SD15(TOY_UNET_CONFIG).get_model({})`.

Objective: eps prediction on ComfyUI's own SD1.5 model_sampling (scaled-linear betas
0.00085..0.012, 1000 steps): t ~ U{0..999}, sigma = model_sampling.sigmas[t],
x = x0 + sigma * eps, UNet input model_sampling.calculate_input(sigma, x) at
model_sampling.timestep(sigma), loss = w(t) * MSE(eps_pred, eps). This is exactly what
BaseModel.apply_model / the samplers evaluate (checked at start-up).
Default w(t) = (1 + sigma^2) / mean, the v-prediction loss written for an eps model: with plain
eps-MSE a small model's eps is ~0.08 off at sigma_max = 14.6, so x0 = x - sigma * eps is ~1 off
and ComfyUI's samplers (which, unlike the prototype's DDIM, never clip x0) diverge.
Data: training combinations only, caption noise 0.30 per attribute, 10% of the captions replaced
by the null prompt "" (for CFG). AdamW with linear warm-up, EMA of the weights (saved).

    python -m toyworld.train_base --seed 0 --steps 2000 --threads 1 --state /tmp/state.pt
"""
from __future__ import annotations

import argparse
import copy
import hashlib
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


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def training_metadata(a, command, train_time, n_params, final_loss) -> dict:
    import comfyui_version

    return {
        "seed": a.seed, "steps": a.steps, "batch": a.batch, "lr": a.lr, "warmup": a.warmup,
        "caption_noise": a.noise, "null_drop": a.drop, "ema": a.ema, "loss_weighting": a.loss_weighting,
        "weight_cap": a.weight_cap, "threads": a.threads,
        "command": command, "train_time_s": f"{train_time:.0f}", "params": n_params,
        "final_loss": f"{final_loss:.5f}",
        "text_encoder_sha256": _sha256(a.text_encoder),
        "torch": torch.__version__, "comfyui": comfyui_version.__version__,
        "objective": "eps prediction, SD15 model_sampling (scaled linear 0.00085-0.012), uniform t, "
                     + ("v-loss weighting (1+sigma^2)" if a.loss_weighting == "v" else "plain eps MSE")
                     + ", EMA weights",
        "held_out_rule": "position == (colour + shape) % 4 (toyworld.world.HELD_OUT_COMBOS)",
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--noise", type=float, default=0.30, help="caption noise, per attribute")
    p.add_argument("--drop", type=float, default=0.10, help="share of captions replaced by the null prompt")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--loss-weighting", choices=["v", "eps"], default="v",
                   help="v: eps-MSE weighted by (1 + sigma^2), normalised to mean 1 over t, i.e. the "
                        "v-prediction loss (makes x0 = x - sigma*eps accurate at high noise, which "
                        "ComfyUI's unclipped samplers need); eps: plain eps-MSE")
    p.add_argument("--weight-cap", type=float, default=0.0, help="cap on the v weight before normalising (0: none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text-encoder", default=os.path.join(HERE, "weights", "text_encoder.safetensors"))
    p.add_argument("--out", default=os.path.join(HERE, "weights", "base_unet.safetensors"))
    p.add_argument("--save-every", type=int, default=0,
                   help="also save EMA snapshots as <out>.stepN.safetensors every N steps")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--state", default=None,
                   help="resumable training state (model, EMA, optimiser, RNG), rewritten every "
                        "--state-every steps; if the file exists, training resumes from it")
    p.add_argument("--state-every", type=int, default=100)
    p.add_argument("--eval-seeds", type=int, default=0,
                   help="after training, evaluate cfg 1/3/5 on held-out prompts x this many seeds")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    command = "python -m toyworld.train_base " + shlex.join(sys.argv[1:] if argv is None else argv)
    setup_comfy(pytorch_attention=True)
    torch.set_num_threads(a.threads)
    from . import comfy_objects as co

    torch.manual_seed(a.seed)
    te = ToyTextEncoder.load(a.text_encoder)
    E, U = te.embedding_table()  # the encoder is frozen: one table for all 72 captions + null

    model = co.build_base_model()
    dm = model.diffusion_model
    co.init_unet_weights(dm, a.seed)
    ms = model.model_sampling
    sigmas = ms.sigmas.float().cpu()
    if a.loss_weighting == "v":
        wtab = 1 + sigmas ** 2
        if a.weight_cap > 0:
            wtab = wtab.clamp(max=a.weight_cap)
        wtab = wtab / wtab.mean()
    else:
        wtab = torch.ones_like(sigmas)
    n_params = sum(p.numel() for p in dm.parameters())

    # The training input path must equal what the samplers evaluate.
    with torch.no_grad():
        for p in dm.parameters():
            p.add_(1e-2 * torch.randn_like(p))  # make the check non-trivial (zero-init output)
        x = torch.randn(2, 4, world.RES, world.RES)
        s = sigmas[torch.tensor([10, 900])]
        c = E[:2]
        x0 = model.apply_model(x, s, c_crossattn=c)
        eps = dm(ms.calculate_input(s, x), ms.timestep(s).float(), context=c)
        assert torch.allclose(x0, x - eps * append_dims(s, x0.ndim), atol=1e-4), "training path != apply_model"
    co.init_unet_weights(dm, a.seed)

    dm.train().requires_grad_(True)
    ema = copy.deepcopy(dm).eval().requires_grad_(False)
    opt = torch.optim.AdamW(dm.parameters(), lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / max(1, a.warmup)))
    g = torch.Generator().manual_seed(a.seed + 1000)
    print(f"UNet parameters {n_params}; text encoder {os.path.basename(a.text_encoder)}; {command}", flush=True)

    start, run, elapsed = 0, 0.0, 0.0
    if a.state and os.path.exists(a.state):
        st = torch.load(a.state, weights_only=True)
        if st["args"] != {k: v for k, v in vars(a).items() if k in st["args"]}:
            raise SystemExit(f"{a.state} was written with different arguments: {st['args']}")
        dm.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        g.set_state(st["rng"])
        start, run, elapsed = st["step"], st["run"], st["elapsed"]
        print(f"resumed from {a.state} at step {start}", flush=True)
    state_args = {k: v for k, v in vars(a).items()
                  if k not in ("steps", "state", "state_every", "log_every", "eval_seeds", "threads")}

    t0 = time.time() - elapsed
    for step in range(start, a.steps):
        img, _, cap = world.train_batch(a.batch, g, a.noise)
        x0 = world.rgb_to_latent(img)
        c = E[cap]
        drop = torch.rand(a.batch, generator=g) < a.drop
        c = torch.where(drop[:, None, None], U.expand_as(c), c)
        t = torch.randint(0, len(sigmas), (a.batch,), generator=g)
        s = sigmas[t]
        noise = torch.randn(x0.shape, generator=g)
        x = x0 + append_dims(s, x0.ndim) * noise
        pred = dm(ms.calculate_input(s, x), ms.timestep(s).float(), context=c)
        loss = ((pred - noise).pow(2).mean((1, 2, 3)) * wtab[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), dm.parameters()):
                pe.lerp_(pn, 1 - d)
        run = 0.98 * run + 0.02 * loss.item()
        if step % a.log_every == 0 or step == a.steps - 1:
            print(f"step {step} loss {run / (1 - 0.98 ** (step + 1)):.4f} t={time.time() - t0:.0f}s", flush=True)
        if a.state and ((step + 1) % a.state_every == 0 or step + 1 == a.steps):
            torch.save({"model": dm.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "rng": g.get_state(), "step": step + 1, "run": run,
                        "elapsed": time.time() - t0, "args": state_args}, a.state + ".tmp")
            os.replace(a.state + ".tmp", a.state)
        if a.save_every and (step + 1) % a.save_every == 0 and step + 1 < a.steps:
            co.save_unet(ema, f"{os.path.splitext(a.out)[0]}.step{step + 1}.safetensors",
                         {"seed": a.seed, "steps": step + 1, "command": command})
    train_time = time.time() - t0

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    meta = training_metadata(a, command, train_time, n_params, run / (1 - 0.98 ** a.steps))
    co.save_unet(ema, a.out, meta)
    print(f"train time {train_time:.0f}s; saved {a.out}", flush=True)

    if a.eval_seeds:
        from .evaluate import sample_and_score
        patcher = co.load_model_patcher(a.out)
        clip = co.load_clip(a.text_encoder)
        seeds = list(range(a.eval_seeds))
        for cfg in (1.0, 3.0, 5.0):
            r = sample_and_score(patcher, clip, world.HELD_OUT_CAPTIONS, seeds, cfg)
            print(f"held-out cfg={cfg}: all {r['all']:.3f} colour {r['colour']:.3f} shape {r['shape']:.3f} "
                  f"position {r['position']:.3f} (n={r['n']}, {r['seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
