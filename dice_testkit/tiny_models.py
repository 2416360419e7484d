"""Tiny in-process models of real ComfyUI architectures (seeded random weights), wrapped in a real
ModelPatcher, and CONDITIONING shaped like each family's text encoder output."""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

CLIP_TOKENS = 77


def init_weights(module: torch.nn.Module, seed: int) -> None:
    """Seeded random weights for a model ComfyUI built with torch.empty layers (fan-in scaled)."""
    # ComfyUI builds layers with torch.empty: every parameter must be written.
    # The generator lives where the weights do, so a full-size GPU model initialises in seconds.
    generators: dict = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            g = generators.setdefault(p.device, torch.Generator(p.device).manual_seed(seed))
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g, device=p.device) / fan_in**0.5)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g, device=p.device) * 0.02)


def as_patcher(model):
    """A real ModelPatcher holding `model` on ComfyUI's torch device."""
    import comfy.model_management
    import comfy.model_patcher

    dev = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=dev, offload_device=dev)


def seeded_model(config_name: str, unet_config: dict, seed: int, device=None):
    """comfy.supported_models.<config_name>(unet_config)'s model with seeded weights, as a ModelPatcher.
    `device` builds the weights there directly (a full-size model for a lent GPU)."""
    import comfy.supported_models

    model = getattr(comfy.supported_models, config_name)(unet_config).get_model({}, device=device)
    init_weights(model, seed)
    return as_patcher(model)


@functools.cache
def token_tables(dim: int, positions: int, seed: int, vocab: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed vocabulary's token vectors (vocab, dim) and position vectors (positions, dim), drawn from one
    seed: the raw material of every tiny text-encoder layout. Cached, since prompts reuse them; never write
    into what it returns."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(vocab or VOCAB_SIZE, dim, generator=g), 0.3 * torch.randn(positions, dim, generator=g)


def llm_prompt(ids: list[int], dim: int, vocab: int | None = None) -> list:
    """A CONDITIONING entry as ComfyUI's LLM text encoders give it (Lumina 2's Gemma, Z-Image's Qwen3): one row per
    token id, no padding, no pooled output and an all-ones attention_mask."""
    table, positions = token_tables(dim, len(ids), 4242 + dim, vocab=vocab)
    c = (table[ids] + positions)[None]
    return [c, {"pooled_output": None, "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}]


def context_tokens(ids: list[int], dim: int, seed: int, causal: bool, min_positions: int) -> torch.Tensor:
    """(len(ids), dim) token vectors plus positions plus a context term: each token also carries the mean of the
    tokens it attends to (causal for CLIP and Llama, all tokens for T5), so end and pad rows depend on the prompt.
    The position table has max(len(ids), min_positions) rows; its draw, and so every vector, depends on that."""
    table, position_rows = token_tables(dim, max(len(ids), min_positions), seed)
    tok = table[torch.tensor(ids)]
    if causal:
        ctx = tok.cumsum(0) / torch.arange(1, len(ids) + 1)[:, None]
    else:
        ctx = tok.mean(0, keepdim=True).expand_as(tok)
    return tok + position_rows[: len(ids)] + 0.5 * ctx


def sd15(seed: int = 0, context_dim: int = 768, dtype: torch.dtype = torch.float32):
    import comfy.supported_models

    unet = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
        "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
        "num_heads": 4, "num_head_channels": -1, "context_dim": context_dim,
        "use_linear_in_transformer": False, "legacy": False, "adm_in_channels": None, "dtype": dtype,
        "transformer_depth_middle": 1, "use_spatial_transformer": True, "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }
    model = comfy.supported_models.SD15(unet).get_model({})
    init_weights(model, seed)
    return as_patcher(model)


def sdxl(seed: int = 0, dtype: torch.dtype = torch.float32):
    import comfy.supported_models

    unet = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
        "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
        "num_heads": -1, "num_head_channels": 16, "context_dim": 2048,
        "use_linear_in_transformer": True, "legacy": False, "adm_in_channels": 2816, "dtype": dtype,
        "transformer_depth_middle": 1, "use_spatial_transformer": True, "use_temporal_attention": False,
        "use_temporal_resblock": False, "num_classes": "sequential",
    }
    model = comfy.supported_models.SDXL(unet).get_model({})
    init_weights(model, seed)
    return as_patcher(model)


def pixart_alpha(seed: int = 0, dtype: torch.dtype = torch.float32):
    import comfy.supported_models

    unet = {
        "image_model": "pixart_alpha", "input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": 48, "depth": 1,
        "num_heads": 4, "caption_channels": 4096, "pe_interpolation": 1.0, "micro_condition": True, "model_max_length": 120,
        "dtype": dtype,
    }
    model = comfy.supported_models.PixArtAlpha(unet).get_model({})
    init_weights(model, seed)
    return as_patcher(model)


def clip_conditioning(seed: int, dim: int, batch: int = 1, tokens: int = CLIP_TOKENS, pooled: int | None = None) -> list:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(batch, tokens, dim, generator=g)
    extras = {"pooled_output": torch.randn(batch, pooled, generator=g) if pooled else None}
    return [[c, extras]]


def t5_conditioning(seed: int, words: int, dim: int = 4096) -> list:
    # ComfyUI's T5 output has no padding: the words plus the end token.
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, words + 1, dim, generator=g), {"pooled_output": None}]]


class CallCounter:
    """Counts diffusion-model forward calls and the batch size of each, via ComfyUI's wrapper hook."""

    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, apply_model, args):
        self.batches.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    def attach(self, patcher):
        p = patcher.clone()
        p.set_model_unet_function_wrapper(self)
        return p


VOCAB_SIZE = 12
END = VOCAB_SIZE - 1


def vocab_conditioning(words: tuple[int, ...], dim: int, pooled: int | None = None, t5: bool = False) -> list:
    """A prompt built from a small fixed vocabulary, like text: start, words, end, padding (CLIP) or
    words and end with no padding (T5). Held-out prompts are unseen combinations of seen words."""
    g = torch.Generator().manual_seed(4242 + dim)
    table = torch.randn(VOCAB_SIZE, dim, generator=g)
    positions = 0.3 * torch.randn(CLIP_TOKENS, dim, generator=g)
    ids = [1 + w for w in words] + [END] if t5 else [0] + [1 + w for w in words] + [END] * (CLIP_TOKENS - 1 - len(words))
    c = (table[ids] + positions[: len(ids)])[None]
    pooled_out = None
    if pooled:
        pooled_out = torch.randn(1, pooled, generator=torch.Generator().manual_seed(len(words) * 31 + sum(words)))
    return [[c, {"pooled_output": pooled_out}]]


def vocab_split(n_train: int = 20, n_held_out: int = 4):
    """27 three-word prompts (one word from each of three slots); the last ones are held out."""
    import itertools

    combos = list(itertools.product(range(3), range(3, 6), range(6, 9)))
    order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(0)).tolist()
    combos = [combos[i] for i in order]
    return combos[:n_train], combos[n_train:n_train + n_held_out]


class TextClip:
    """A text encoder for the nodes' text boxes: each string maps to fixed seeded CLIP-L-shaped tokens."""

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, text):
        return clip_conditioning(sum(map(ord, text)) + 17 * len(text), 768)


def train_node_args(**overrides) -> dict:
    """DICE Train Refiner's widget values for a seconds-long run on a tiny model (two prompts, 64 px)."""
    args = dict(prompts="a\nb", prompts_file="(none)", steps=3, batch_size=4, guidance_scale=5.0, recipe="dice-pack",
                learning_rate=0.0, loss="auto", seed=3, width=64, height=64, samples_per_prompt=2, teacher_steps=3,
                save_every=0, filename_prefix="tiny", gradient_checkpointing=False, autocast="none")
    args.update(overrides)
    return args


class LinearDenoiser:
    """A pure-torch stand-in for ComfyDenoiser, with no model behind it: for testing the training
    loop's own logic (data layout, guards, loss scaling) in milliseconds."""

    sigma_max = 10.0

    def sigma_schedule(self, steps):
        return torch.linspace(self.sigma_max, 0.0, steps + 1)

    def random_sigmas(self, n, g):
        return torch.rand(n, generator=g) * self.sigma_max + 0.1

    def sigma_at_percent(self, percent):
        return self.sigma_max * (1.0 - percent)

    def noise_latent(self, x0, noise, sigma):
        return x0 + noise * sigma.view(-1, 1, 1, 1)

    def teacher(self, x, sigma, idx):
        return x * 0.5, x * 0.4

    def student(self, x, sigma, idx, c):
        return x * 0.5 + c.mean() * 0.1


class HeldOut(NamedTuple):
    unrefined: float  # distillation loss at alpha=0
    refined: float
    student_vs_teacher: float  # max relative difference at alpha=0: the two must share numerics
    grad_scaling: bool  # whether this model's precision trains with loss scaling


def held_out_evaluation(patcher, bundle, held_out: list, uc: list, size: int | tuple, autocast=None, loss: str = "l1",
                        teacher_steps: int = 8) -> HeldOut:
    """Judge a trained refiner on held-out prompts and fresh noise, on ComfyUI's torch device, as the GPU
    precision check does."""
    from dice_comfy import internals, session
    from dice_comfy.bridge import ComfyDenoiser
    from dice_core.training import PromptBank, TrainConfig, evaluate_distillation, teacher_trajectories

    device = internals.torch_device()
    image_size = (size, size) if isinstance(size, int) else tuple(size)  # (width, height[, frames])
    bundle.module.to(device)
    denoiser = ComfyDenoiser(patcher, held_out, uc, device, bundle.pad_to, bundle.pad_token, autocast)
    bank = PromptBank(c=denoiser.student_bank(), uc=bundle.pad(uc[0]))
    eval_cfg = TrainConfig.from_recipe("dice-pack", teacher_steps=teacher_steps, samples_per_prompt=2, seed=1234, batch_size=8,
                                       loss=loss)
    with torch.no_grad():
        patcher.pre_run()
        data = teacher_trajectories(denoiser, len(held_out), session.latent_shape(patcher, *image_size), eval_cfg)
        unrefined = evaluate_distillation(bundle, denoiser, bank, data, eval_cfg, alpha=0.0)
        refined = evaluate_distillation(bundle, denoiser, bank, data, eval_cfg, alpha=1.0)
        j = torch.arange(min(8, len(data)))
        x, sigma, idx = data.x[j].to(device), data.sigma[j].to(device), data.idx[j]
        x0_c, _ = denoiser.teacher(x, sigma, idx)
        student = denoiser.student(x, sigma, idx, bank.c[idx].to(device))
        mismatch = float((student.float() - x0_c.float()).abs().max() / x0_c.float().abs().max())
        patcher.cleanup()
    bundle.module.to("cpu")
    return HeldOut(unrefined, refined, mismatch, bool(denoiser.needs_grad_scaling))
