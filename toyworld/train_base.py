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
--prediction v trains a v-prediction UNet instead (ComfyUI's ModelType.V_PREDICTION, the target
v = (eps - sigma * x0) / sqrt(sigma^2 + 1)), with the same loss in eps units: an eps model's x0 still
scatters near sigma_max with that weighting (python -m toyworld.diagnose), a v model's output there is
about -x0. The file records "prediction": "v"; files without it are eps models.
Data: training combinations only, caption noise 0.30 per attribute, 10% of the captions replaced
by the null prompt "" (for CFG). AdamW with linear warm-up, EMA of the weights (saved).

    python -m toyworld.train_base --seed 0 --steps 2000 --threads 1 --state /tmp/state.pt

The loop, checks, EMA, resumable state and metadata are shared with world 2's base model
(toyworld/train_base2.py): a world supplies only its data (a `batches` object: training latents and
contexts, the null context) and its recipe (UNet config, default files, held-out rule, evaluation).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dice_comfy.setup import setup_comfy
from dice_core.refiner import append_dims

from . import world
from .text_encoder import ToyTextEncoder

HERE = os.path.dirname(os.path.abspath(__file__))


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@dataclass(frozen=True)
class Recipe:
    """What differs between the worlds' base models; the training loop is shared."""

    module: str  # for the recorded command: python -m <module> ...
    unet_config: dict | None  # None: comfy_objects.TOY_UNET_CONFIG
    text_encoder: str
    out: str
    held_out_rule: str
    # (text encoder, args) -> the world's data: .batch(n, generator) -> (x0 latents, context), .null (T, D),
    # .check_context (2, T, D) and .res (latent px)
    make_batches: Callable
    # (args, path of the saved model) -> extra metadata to record in it ({}: nothing to record)
    evaluate: Callable | None = None


def training_metadata(a, command, recipe: Recipe, progress: dict) -> dict:
    """progress: steps done, train_time_s, final_loss and params, as of the file being written."""
    import comfyui_version

    return {
        "seed": a.seed, "steps": progress["steps"], "batch": a.batch, "lr": a.lr, "warmup": a.warmup,
        "caption_noise": a.noise, "null_drop": a.drop, "ema": a.ema, "loss_weighting": a.loss_weighting,
        "weight_cap": a.weight_cap, "threads": a.threads,
        "command": command, "train_time_s": f"{progress['train_time_s']:.0f}", "params": progress["params"],
        "final_loss": f"{progress['final_loss']:.5f}",
        "text_encoder_sha256": _sha256(a.text_encoder),
        "torch": torch.__version__, "comfyui": comfyui_version.__version__,
        "prediction": a.prediction,
        "objective": f"{a.prediction} prediction, SD15 model_sampling (scaled linear 0.00085-0.012), uniform t, "
                     + ("v-loss weighting (1+sigma^2)" if a.loss_weighting == "v" else "plain eps MSE")
                     + ", EMA weights",
        "held_out_rule": recipe.held_out_rule,
    }


def parse_args(argv=None, recipe: Recipe | None = None, doc: str = __doc__):
    recipe = recipe or WORLD1
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--prediction", choices=["eps", "v"], default="eps",
                   help="what the UNet predicts: eps (SD1.5's, the shipped world-1 model) or v (ComfyUI samples it "
                        "natively; keeps x0 accurate near sigma_max, see toyworld/diagnose.py)")
    p.add_argument("--weight-cap", type=float, default=0.0, help="cap on the v weight before normalising (0: none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text-encoder", default=recipe.text_encoder)
    p.add_argument("--out", default=recipe.out)
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


def loss_weights(sigmas: torch.Tensor, a) -> torch.Tensor:
    if a.loss_weighting == "v":
        wtab = 1 + sigmas ** 2
        if a.weight_cap > 0:
            wtab = wtab.clamp(max=a.weight_cap)
        return wtab / wtab.mean()
    return torch.ones_like(sigmas)


def check_training_path(model, sigmas: torch.Tensor, context: torch.Tensor, res: int) -> None:
    """The training input path must equal what the samplers evaluate (BaseModel.apply_model). Perturbs the
    weights (the zero-initialised output would make the check trivial): re-initialise them afterwards."""
    dm, ms = model.diffusion_model, model.model_sampling
    with torch.no_grad():
        for p in dm.parameters():
            p.add_(1e-2 * torch.randn_like(p))
        x = torch.randn(2, world.LATENT_CHANNELS, res, res)
        s = sigmas[torch.tensor([10, 900])]
        x0 = model.apply_model(x, s, c_crossattn=context)
        out = dm(ms.calculate_input(s, x), ms.timestep(s).float(), context=context)
        assert torch.allclose(x0, ms.calculate_denoised(s, out, x), atol=1e-4), "training path != apply_model"


def v_target(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """What a v-prediction UNet should output for x = x0 + sigma * noise: (noise - sigma * x0) / sqrt(sigma^2 + 1),
    the output from which ComfyUI's V_PREDICTION.calculate_denoised gives back x0 (sigma_data 1)."""
    s = append_dims(sigma, x0.ndim)
    return (noise - s * x0) / (s ** 2 + 1).sqrt()


def train(a, recipe: Recipe, command: str) -> None:
    setup_comfy(pytorch_attention=True)
    torch.set_num_threads(a.threads)
    from . import comfy_objects as co

    torch.manual_seed(a.seed)
    te = ToyTextEncoder.load(a.text_encoder)
    data = recipe.make_batches(te, a)

    model = co.build_base_model(recipe.unet_config, prediction=a.prediction)
    dm = model.diffusion_model
    co.init_unet_weights(dm, a.seed)
    ms = model.model_sampling
    sigmas = ms.sigmas.float().cpu()
    wtab = loss_weights(sigmas, a)
    n_params = sum(p.numel() for p in dm.parameters())
    check_training_path(model, sigmas, data.check_context, data.res)
    co.init_unet_weights(dm, a.seed)

    def save(net, path, progress):
        co.save_unet(net, path, training_metadata(a, command, recipe, {"params": n_params, **progress}),
                     unet_config=recipe.unet_config, prediction=a.prediction)

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

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    t0 = time.time() - elapsed
    for step in range(start, a.steps):
        x0, c = data.batch(a.batch, g)
        drop = torch.rand(a.batch, generator=g) < a.drop
        c = torch.where(drop[:, None, None], data.null.expand_as(c), c)
        t = torch.randint(0, len(sigmas), (a.batch,), generator=g)
        s = sigmas[t]
        noise = torch.randn(x0.shape, generator=g)
        x = x0 + append_dims(s, x0.ndim) * noise
        pred = dm(ms.calculate_input(s, x), ms.timestep(s).float(), context=c)
        if a.prediction == "eps":
            loss = ((pred - noise).pow(2).mean((1, 2, 3)) * wtab[t]).mean()
        else:  # v error = eps error * sqrt(1 + sigma^2): divided back, --loss-weighting means the same for both
            loss = ((pred - v_target(x0, noise, s)).pow(2).mean((1, 2, 3)) / (1 + s ** 2) * wtab[t]).mean()
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
            save(ema, f"{os.path.splitext(a.out)[0]}.step{step + 1}.safetensors",
                 {"steps": step + 1, "train_time_s": time.time() - t0, "final_loss": run / (1 - 0.98 ** (step + 1))})
    train_time = time.time() - t0

    save(ema, a.out, {"steps": a.steps, "train_time_s": train_time, "final_loss": run / (1 - 0.98 ** a.steps)})
    print(f"train time {train_time:.0f}s; saved {a.out}", flush=True)
    if a.eval_seeds and recipe.evaluate is not None:
        extra = recipe.evaluate(a, a.out)
        if extra:
            co.save_unet(ema, a.out, {**co.read_metadata(a.out), **extra}, unet_config=recipe.unet_config,
                         prediction=a.prediction)
            print(f"recorded the evaluation in {a.out}", flush=True)


class World1Batches:
    """World 1's data: one frozen-encoder table for all 72 captions and the null prompt."""

    res = world.RES

    def __init__(self, text_encoder: ToyTextEncoder, a):
        self.table, self.null = text_encoder.embedding_table()
        self.noise = a.noise
        self.check_context = self.table[:2]

    def batch(self, n: int, g: torch.Generator):
        img, _, cap = world.train_batch(n, g, self.noise)
        return world.rgb_to_latent(img), self.table[cap]


def evaluate_world1(a, path: str) -> dict:
    """Prints the held-out cfg table; world 1's metadata records no evaluation."""
    from . import comfy_objects as co
    from .evaluate import sample_and_score

    patcher = co.load_model_patcher(path)
    clip = co.load_clip(a.text_encoder)
    seeds = list(range(a.eval_seeds))
    for cfg in (1.0, 3.0, 5.0):
        r = sample_and_score(patcher, clip, world.HELD_OUT_CAPTIONS, seeds, cfg)
        print(f"held-out cfg={cfg}: all {r['all']:.3f} colour {r['colour']:.3f} shape {r['shape']:.3f} "
              f"position {r['position']:.3f} (n={r['n']}, {r['seconds']:.0f}s)", flush=True)
    return {}


WORLD1 = Recipe(
    module="toyworld.train_base", unet_config=None,
    text_encoder=os.path.join(HERE, "weights", "text_encoder.safetensors"),
    out=os.path.join(HERE, "weights", "base_unet.safetensors"),
    held_out_rule="position == (colour + shape) % 4 (toyworld.world.HELD_OUT_COMBOS)",
    make_batches=World1Batches, evaluate=evaluate_world1,
)


def main(argv=None, recipe: Recipe = WORLD1, doc: str = __doc__):
    a = parse_args(argv, recipe, doc)
    command = f"python -m {recipe.module} " + shlex.join(sys.argv[1:] if argv is None else argv)
    train(a, recipe, command)


if __name__ == "__main__":
    main()
