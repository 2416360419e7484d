"""Sample with ComfyUI's own sampler and score text-image alignment exactly.

`sample_and_score(model, clip_or_cond_fn, prompts, seeds, cfg, sampling, ...)` runs
`nodes.common_ksampler` and scores every (prompt, seed) pair with world.analyse.

Pair definition: the pair (prompt, seed) starts from the noise ComfyUI's KSampler draws for a
batch of one with that seed (all prompts of one seed run as one batch with
latent["batch_index"] = [0, ..., 0], which gives each of them exactly that noise). So a pair's
image is reproducible with a plain KSampler at batch size 1, and every method compared on the
same prompts and seeds sees the same starting noise.

CLI (prints the cfg table on the held-out prompts):
    python -m toyworld.evaluate --seeds 20 --cfg 1 3 5
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from . import world


def _encoder(clip_or_cond_fn):
    """CLIP object -> text -> CONDITIONING through ComfyUI's CLIPTextEncode; a callable is used as is."""
    if hasattr(clip_or_cond_fn, "tokenize") and hasattr(clip_or_cond_fn, "encode_from_tokens_scheduled"):
        import nodes
        node = nodes.CLIPTextEncode()
        return lambda text: node.encode(clip_or_cond_fn, text)[0]
    if callable(clip_or_cond_fn):
        return clip_or_cond_fn
    raise TypeError("clip_or_cond_fn must be a CLIP object or a function text -> CONDITIONING")


def _batch_conditioning(conds):
    """[CONDITIONING of batch 1, ...] -> one CONDITIONING whose tensors have batch len(conds). Entry j of the result
    batches entry j of every prompt, keeping prompt 0's keys (start_percent/end_percent where a transform splits the
    steps into timestep ranges), so every prompt needs the same entries; pooled_output tensors are concatenated too."""
    counts = {len(c) for c in conds}
    if len(counts) != 1:
        raise ValueError(f"prompts have different numbers of CONDITIONING entries {sorted(counts)}; cannot batch them")
    out = []
    for j in range(counts.pop()):
        tensors = [c[j][0] for c in conds]
        if len({tuple(t.shape[1:]) for t in tensors}) != 1:
            raise ValueError("prompts encode to different token counts; cannot batch them")
        extra = dict(conds[0][j][1])
        pooled = [c[j][1].get("pooled_output") for c in conds]
        if all(isinstance(p, torch.Tensor) for p in pooled):
            extra["pooled_output"] = torch.cat(pooled, 0)
        out.append([torch.cat(tensors, 0), extra])
    return out


def conditioning(clip_or_cond_fn, prompts, sampling, positive_transform=None, negative=None):
    """(positive, negative) CONDITIONING for a batch of prompts: each prompt encoded (and transformed) on its own,
    then batched; the negative defaults to the encoding of sampling.negative_prompt."""
    encode = _encoder(clip_or_cond_fn)
    pos = []
    for p in prompts:
        c = encode(p)
        if positive_transform is not None:
            c = positive_transform(c)
        pos.append(c)
    if negative is None:
        negative = encode(sampling.negative_prompt)
    return _batch_conditioning(pos), negative


def sample_latents(model, positive, negative, seeds, cfg, sampling, res: int, first_index: int | None = None):
    """nodes.common_ksampler on a batch of prompts (positive's batch), once per seed, at res x res latent px.
    Returns (latents (n * len(seeds), 4, res, res), row i * len(seeds) + j for (prompt i, seed j); seconds).
    By default (first_index None) every prompt of a seed starts from the same noise (world 1's table, 20 seeds). An
    int first_index gives prompt i its own noise, ComfyUI's batch_index first_index + i of the seed, so that with a few
    seeds the prompts are independent draws and an interval over prompts means what it says, and prompts sampled in
    several calls get the noise they would get in one (ComfyUI draws batch_index k's noise as the seed's k-th draw); a
    method's pairs still start from the same noise as every other method's."""
    import comfy.utils

    import nodes

    n = positive[0][0].shape[0]
    latent = {"samples": torch.zeros(n, world.LATENT_CHANNELS, res, res),
              "batch_index": [0] * n if first_index is None else list(range(first_index, first_index + n))}
    t0 = time.time()
    old_pbar = comfy.utils.PROGRESS_BAR_ENABLED
    comfy.utils.PROGRESS_BAR_ENABLED = sampling.progress
    out = torch.empty(n, len(seeds), world.LATENT_CHANNELS, res, res)
    try:
        for j, seed in enumerate(seeds):
            samples = nodes.common_ksampler(model, int(seed), sampling.steps, float(cfg), sampling.sampler,
                                            sampling.scheduler, positive, negative, latent)[0]["samples"]
            out[:, j] = samples.float().cpu()
    finally:
        comfy.utils.PROGRESS_BAR_ENABLED = old_pbar
    return out.reshape(n * len(seeds), *out.shape[2:]), time.time() - t0


@dataclass(frozen=True)
class SamplingOptions:
    """How KSampler runs: the teacher's settings by default (euler, normal, 20 steps, empty negative)."""

    steps: int = 20
    sampler: str = "euler"
    scheduler: str = "normal"
    negative_prompt: str = ""  # encoded as the negative when no negative CONDITIONING is given
    progress: bool = False  # ComfyUI's console progress bar
    # Prompts per KSampler call (0: all in one). On a CPU, a batch of a few dozen small latents runs faster per image
    # than one of hundreds (the activations stay in cache); the noise is the same either way (sample_latents).
    prompts_per_call: int = 0


def sample_and_score(model, clip_or_cond_fn, prompts, seeds, cfg, sampling: SamplingOptions | None = None,
                     positive_transform=None, negative=None):
    """Generate one image per (prompt, seed) with nodes.common_ksampler and score it.

    model: a ComfyUI MODEL (ModelPatcher), e.g. load_toy_world()[0].
    clip_or_cond_fn: a CLIP (encoded via the real CLIPTextEncode node) or a function
        text -> CONDITIONING.
    prompts: world captions ("a red cross on the left", ...); their attributes are the targets.
    seeds: ints. cfg: float (cfg=1 makes ComfyUI skip the unconditional pass).
    sampling: steps, sampler, scheduler (default SamplingOptions()).
    positive_transform: optional CONDITIONING -> CONDITIONING applied to each prompt's own
        batch-1 positive conditioning (once per prompt), e.g. a DICE refiner.
    negative: CONDITIONING to use as negative; default: the encoding of sampling.negative_prompt ("").

    Returns a dict: "all", "colour", "shape", "position" (accuracies over all pairs), "iou",
    "n", "latents" (N, 4, 16, 16) with row i * len(seeds) + j for (prompts[i], seeds[j]),
    "prompts", "seeds", "per_prompt" (accuracy of each prompt over the seeds), "seconds".
    """
    sampling = sampling or SamplingOptions()
    prompts, seeds = list(prompts), list(seeds)
    targets = [world.parse_caption(p) for p in prompts]
    if any(t is None for t in targets):
        bad = [p for p, t in zip(prompts, targets) if t is None]
        raise ValueError(f"not toy-world captions: {bad[:3]}")
    positive, negative = conditioning(clip_or_cond_fn, prompts, sampling, positive_transform, negative)
    n = len(prompts)
    latents, seconds = sample_latents(model, positive, negative, seeds, cfg, sampling, world.RES)
    ci = torch.tensor([t[0] for t in targets]).repeat_interleave(len(seeds))
    si = torch.tensor([t[1] for t in targets]).repeat_interleave(len(seeds))
    pi = torch.tensor([t[2] for t in targets]).repeat_interleave(len(seeds))
    a = world.analyse(world.latent_to_rgb(latents))
    ok_c, ok_s, ok_p = a["colour"] == ci, a["shape"] == si, a["position"] == pi
    ok = ok_c & ok_s & ok_p
    return {
        "all": ok.float().mean().item(),
        "colour": ok_c.float().mean().item(),
        "shape": ok_s.float().mean().item(),
        "position": ok_p.float().mean().item(),
        "iou": a["iou"].mean().item(),
        "n": int(ok.numel()),
        "latents": latents,
        "correct": ok.view(n, len(seeds)),
        "per_prompt": dict(zip(prompts, ok.view(n, len(seeds)).float().mean(1).tolist())),
        "prompts": prompts,
        "seeds": seeds,
        "seconds": seconds,
    }


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="cfg accuracy table on the held-out prompts")
    p.add_argument("--unet", default=None, help="base_unet safetensors (default: shipped)")
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 per prompt (18 prompts)")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="normal")
    p.add_argument("--split", choices=["held_out", "train"], default="held_out")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)

    from dice_comfy.setup import setup_comfy

    setup_comfy(pytorch_attention=True)
    torch.set_num_threads(a.threads)
    from . import comfy_objects as co

    model, clip, _ = co.load_toy_world(a.unet or co.UNET_PATH)
    prompts = world.HELD_OUT_CAPTIONS if a.split == "held_out" else world.TRAIN_CAPTIONS
    seeds = list(range(a.seed_offset, a.seed_offset + a.seeds))
    print(f"{a.split} prompts: {len(prompts)} x {len(seeds)} seeds = {len(prompts) * len(seeds)} pairs; "
          f"{a.sampler}/{a.scheduler}, {a.steps} steps")
    print(f"{'cfg':>5} {'all':>6} {'colour':>7} {'shape':>6} {'pos':>6} {'iou':>6} {'sec':>6}")
    for cfg in a.cfg:
        r = sample_and_score(model, clip, prompts, seeds, cfg, SamplingOptions(a.steps, a.sampler, a.scheduler))
        print(f"{cfg:5.1f} {r['all']:6.3f} {r['colour']:7.3f} {r['shape']:6.3f} {r['position']:6.3f} "
              f"{r['iou']:6.3f} {r['seconds']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
