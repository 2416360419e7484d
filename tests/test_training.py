"""DICE training on tiny real ComfyUI models, through the node code. Every family's held-out check is in
tests/test_family_*.py."""

import pytest
import torch

from dice_core.fileformat import load_refiner
from dice_core.training import (
    NonFiniteLossError,
    PromptBank,
    TrainConfig,
    TrainingData,
    TrainingEvents,
    teacher_trajectories,
    train_refiner,
)
from dice_testkit import tiny_models


def test_pixart_refiner_keeps_each_t5_prompt_its_own_length(comfy_nodes):
    """ComfyUI's T5 emits no padding, and the refiner adds none (benchmarks/padding_study.py measured padding
    to 120 worse): prompts of different lengths train together and the refined prompt keeps its length."""
    from dice_comfy import session

    patcher = tiny_models.pixart_alpha()
    prompts = [tiny_models.t5_conditioning(s, 2 + s)[0] for s in range(3)]
    uc = tiny_models.t5_conditioning(999, 0)[0]
    assert uc[0].shape[1] == 1  # "" encodes to the end token only
    cfg = TrainConfig.from_recipe("dice-pack", steps=2, batch_size=2, teacher_steps=2, samples_per_prompt=1)
    bundle = session.run_training(patcher, prompts, uc, cfg, session.SessionOptions(width=320, height=320)).bundle
    assert bundle.pad_to is None and bundle.keep_rule == "none" and bundle.pad_token is None
    refined = comfy_nodes["DiceRefineConditioning"].execute([prompts[2]], bundle, 1.0).args[0]
    assert refined[0][0].shape == prompts[2][0].shape == (1, 5, 4096)
    assert not torch.equal(refined[0][0], prompts[2][0])


def _train_node_args(**kw):
    args = dict(
        prompts="a\nb\nc", prompts_file="(none)", steps=12, batch_size=4, guidance_scale=5.0, recipe="dice-pack",
        learning_rate=0.0, loss="auto", seed=3, width=64, height=64, samples_per_prompt=2, teacher_steps=4,
        save_every=0, filename_prefix="test", gradient_checkpointing=False, autocast="none",
    )
    args.update(kw)
    return args


class FakeClip:
    """Stands in for a text encoder only: maps each prompt string to fixed random CLIP-shaped tokens."""

    def __init__(self, dim=768):
        self.dim = dim

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, text):
        seed = sum(map(ord, text)) + 17 * len(text)
        return tiny_models.clip_conditioning(seed, self.dim)


def _sample(patcher, cond, seed=5):
    import nodes

    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    neg = tiny_models.clip_conditioning(1, 768)
    return nodes.common_ksampler(patcher, seed, 3, 5.0, "euler", "normal", cond, neg, latent)[0]["samples"]


def test_train_node_leaves_the_shared_model_bit_identical(comfy_nodes, comfy_dirs):
    # Build the model the way a loader node does: under inference_mode, so its weights are inference tensors.
    with torch.inference_mode():
        patcher = tiny_models.sd15(seed=4)
        cond = tiny_models.clip_conditioning(8, 768)
        before = _sample(patcher, cond)
    params_before = {n: p for n, p in patcher.model.named_parameters()}
    assert all(p.is_inference() for p in params_before.values())
    with torch.inference_mode():
        out = comfy_nodes["DiceTrainRefiner"].execute(patcher, clip=FakeClip(), **_train_node_args(steps=6))
        after = _sample(patcher, cond)
    assert torch.equal(before, after)
    params_after = {n: p for n, p in patcher.model.named_parameters()}
    assert all(params_after[n] is p for n, p in params_before.items()), "parameters must be the original objects"
    bundle, loss_img, pattern_img = out.args
    assert bundle.train_step == 6 and loss_img.shape[-1] == 3 and pattern_img.shape[-1] == 3


def test_cancel_keeps_a_checkpoint_and_resume_matches_an_uninterrupted_run(comfy_nodes, comfy_dirs, monkeypatch):
    import comfy.model_management
    import comfy.utils

    # ComfyUI 0.33 passes a progress update to the hook only 100 ms after the last one, so on a fast machine the
    # hook below could first see step 8 or 9 and the cancel would land at a random step. With no minimum
    # interval every update reaches it, as on 0.3.75, which has no throttle.
    monkeypatch.setattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0, raising=False)

    node = comfy_nodes["DiceTrainRefiner"]
    patcher = tiny_models.sd15(seed=2)
    clip = FakeClip()
    full = node.execute(patcher, clip=clip, **_train_node_args(steps=12)).args[0]

    teacher_calls = 2 * 3 // 4 + 1  # ceil(6 samples / batch 4) chunks
    cancel_at = teacher_calls * 4 + 7  # progress value after the teacher phase and 7 training steps

    def hook(value, total, preview, node_id=None):
        if value >= cancel_at:
            comfy.model_management.interrupt_current_processing(True)

    old_hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.PROGRESS_BAR_HOOK = hook
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            node.execute(patcher, clip=clip, **_train_node_args(steps=12, save_every=5, filename_prefix="run"))
    finally:
        comfy.utils.PROGRESS_BAR_HOOK = old_hook
        comfy.model_management.interrupt_current_processing(False)

    ckpt = comfy_dirs / "models" / "dice" / "run_checkpoint.safetensors"
    partial = load_refiner(str(ckpt))
    assert partial.train_step == 7, "the cancel itself must checkpoint the last finished step"
    assert partial.optimizer_state is not None and len(partial.loss_history) == 7

    loaded = comfy_nodes["DiceLoadRefiner"].execute("run_checkpoint.safetensors").args[0]
    resumed = node.execute(patcher, clip=clip, resume_from=loaded, **_train_node_args(steps=12)).args[0]
    assert resumed.train_step == 12
    for k, v in full.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    assert resumed.loss_history == pytest.approx(full.loss_history, rel=1e-5)


def test_same_seed_gives_the_same_refiner_on_cpu(comfy_nodes, comfy_dirs):
    node = comfy_nodes["DiceTrainRefiner"]
    patcher = tiny_models.sd15(seed=2)
    a = node.execute(patcher, clip=FakeClip(), **_train_node_args(steps=4)).args[0]
    b = node.execute(patcher, clip=FakeClip(), **_train_node_args(steps=4)).args[0]
    for k, v in a.module.state_dict().items():
        assert torch.equal(b.module.state_dict()[k], v)


def test_bad_inputs_get_clear_errors(comfy_nodes, comfy_dirs):
    node = comfy_nodes["DiceTrainRefiner"]
    patcher = tiny_models.sd15(seed=2)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        node.execute(patcher, clip=FakeClip(), **_train_node_args(steps=0))
    with pytest.raises(ValueError, match="no training prompts"):
        node.execute(patcher, clip=FakeClip(), **_train_node_args(prompts="\n  \n# comment"))
    wrong = comfy_nodes["DiceTrainRefiner"].execute(
        tiny_models.sdxl(), conditioning=tiny_models.clip_conditioning(1, 2048, pooled=1280),
        negative=tiny_models.clip_conditioning(2, 2048, pooled=1280), **_train_node_args(prompts="", steps=1)
    ).args[0]
    with pytest.raises(ValueError, match="trained for SDXL, but the MODEL is SD15"):
        node.execute(patcher, clip=FakeClip(), resume_from=wrong, **_train_node_args())
    wrong.family = "SD15"  # the same family, but another text encoder's width
    with pytest.raises(ValueError, match="trained for embedding dim 2048 \\(SD15\\)"):
        node.execute(patcher, clip=FakeClip(), resume_from=wrong, **_train_node_args())
    with pytest.raises(ValueError, match="latents with 4 channels"):
        node.execute(patcher, clip=FakeClip(), latents={"samples": torch.zeros(3, 16, 8, 8)}, **_train_node_args())
    with pytest.raises(ValueError, match="3 latents but 2 captions"):
        node.execute(patcher, clip=FakeClip(), latents={"samples": torch.zeros(3, 4, 8, 8)}, **_train_node_args(prompts="a\nb"))
    with pytest.raises(ValueError, match="prompts file not found"):
        node.execute(patcher, clip=FakeClip(), **_train_node_args(prompts_file="missing.txt"))


def test_real_latents_train_with_captions(comfy_nodes, comfy_dirs):
    node = comfy_nodes["DiceTrainRefiner"]
    patcher = tiny_models.sd15(seed=2)
    latents = {"samples": torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    bundle = node.execute(patcher, clip=FakeClip(), latents=latents, **_train_node_args(steps=5)).args[0]
    assert bundle.train_step == 5 and bundle.recipe["data"] == "noised"


class _NaNAfter(tiny_models.LinearDenoiser):
    """The student's output turns NaN at a given call: exercises the loop's guard."""

    def __init__(self, bad_call):
        self.calls, self.bad_call = 0, bad_call

    def student(self, x, sigma, idx, c):
        self.calls += 1
        out = super().student(x, sigma, idx, c)
        return out * float("nan") if self.calls >= self.bad_call else out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from dice_core.fileformat import RefinerBundle, save_refiner
    from dice_core.refiner import Refiner

    bundle = RefinerBundle(module=Refiner(16, inner_dim=16, heads=2), null_uc=torch.zeros(1, 77, 16))
    bank = PromptBank(c=torch.randn(4, 77, 16), uc=torch.zeros(1, 77, 16))
    data = TrainingData(x=torch.randn(8, 4, 4, 4), idx=torch.arange(8) % 4)
    cfg = TrainConfig.from_recipe("paper", steps=20, batch_size=2, save_every=3)
    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(NonFiniteLossError, match="step 8"):
        train_refiner(bundle, _NaNAfter(8), bank, data, cfg, TrainingEvents(save_checkpoint=lambda b: save_refiner(str(path), b)))
    saved = load_refiner(str(path))
    assert saved.train_step == 6 and all(torch.isfinite(v).all() for v in saved.module.state_dict().values())


def test_comfy_noising_matches_the_papers_ddpm_noising(comfy_nodes):
    """Data-free latents are noised as x0 + sigma*eps (ComfyUI's parameterisation). After ComfyUI's input
    scaling this is exactly the paper's add_noise: sqrt(ab)*x0 + sqrt(1-ab)*eps at the same timestep."""
    from dice_comfy import bridge

    patcher = tiny_models.sd15()
    denoiser = bridge.ComfyDenoiser(patcher, [tiny_models.clip_conditioning(0, 768)[0]], tiny_models.clip_conditioning(1, 768)[0],
                                    torch.device("cpu"), None, None)
    ms = patcher.model.model_sampling
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2  # SD1.5's scaled-linear schedule
    alphas_bar = torch.cumprod(1 - betas, 0)
    g = torch.Generator().manual_seed(0)
    for t in (0, 250, 999):
        x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        sigma = ms.sigmas[t].expand(2)
        x = denoiser.noise_latent(x0, eps, sigma)
        model_input = ms.calculate_input(sigma.view(-1, 1, 1, 1), x)
        ab = alphas_bar[t].float()
        torch.testing.assert_close(model_input, ab.sqrt() * x0 + (1 - ab).sqrt() * eps, rtol=1e-4, atol=1e-5)
        assert round(float(ms.timestep(sigma[:1]))) == t


class _HalfTeacher(tiny_models.LinearDenoiser):
    """A denoiser whose model answers in float16, as a half-precision model on a GPU does."""

    def teacher(self, x, sigma, idx):
        return tuple(out.half() for out in super().teacher(x, sigma, idx))


def test_teacher_trajectories_stay_float32_whatever_precision_the_model_answers_in():
    cfg = TrainConfig.from_recipe("dice-pack", teacher_steps=4, samples_per_prompt=2, batch_size=3, seed=0)
    half = teacher_trajectories(_HalfTeacher(), 3, (4, 4, 4), cfg)
    full = teacher_trajectories(tiny_models.LinearDenoiser(), 3, (4, 4, 4), cfg)
    assert half.x.dtype == half.target.dtype == torch.float32
    assert torch.allclose(half.x, full.x, rtol=3e-3, atol=1e-2) and not torch.equal(half.x, full.x)


class _ScaledStudent(tiny_models.LinearDenoiser):
    """Asks the loop for loss scaling, as ComfyDenoiser does for a float16 model on a GPU."""

    needs_grad_scaling = True


def test_loss_scaling_trains_the_same_refiner_as_plain_float32():
    from dice_core.fileformat import RefinerBundle
    from dice_core.refiner import Refiner

    def train(denoiser):
        torch.manual_seed(0)
        bundle = RefinerBundle(module=Refiner(16, inner_dim=16, heads=2), null_uc=torch.zeros(1, 77, 16))
        bank = PromptBank(c=torch.randn(4, 77, 16), uc=torch.zeros(1, 77, 16))
        data = TrainingData(x=torch.randn(8, 4, 4, 4), idx=torch.arange(8) % 4)
        cfg = TrainConfig.from_recipe("paper", steps=6, batch_size=2)
        return train_refiner(bundle, denoiser, bank, data, cfg)

    torch.manual_seed(0)
    initial = Refiner(16, inner_dim=16, heads=2).fc2.weight.detach().clone()
    scaled, plain = train(_ScaledStudent()), train(tiny_models.LinearDenoiser())
    assert scaled.losses == pytest.approx(plain.losses, rel=1e-5)
    for k, v in plain.bundle.module.state_dict().items():
        assert torch.allclose(scaled.bundle.module.state_dict()[k], v, atol=1e-6), k
    assert not torch.allclose(plain.bundle.module.fc2.weight, initial)  # it did train


@pytest.mark.parametrize(
    "weights, autocast, device, expect_autocast, expect_scaling",
    [
        (torch.float32, torch.bfloat16, "cuda", torch.bfloat16, False),  # fp32 model: the user's autocast applies
        (torch.float32, torch.float16, "cuda", torch.float16, True),
        (torch.float16, torch.bfloat16, "cuda", None, True),  # ComfyUI's fp16 stays; fp16 needs loss scaling
        (torch.bfloat16, torch.float16, "cuda", None, False),
        (torch.float32, torch.bfloat16, "cpu", None, False),  # the CPU always runs as loaded
        (torch.float16, None, "cpu", None, False),
    ],
)
def test_teacher_and_student_precision_follows_the_loaded_model(comfy_nodes, weights, autocast, device, expect_autocast,
                                                                 expect_scaling):
    from dice_comfy import bridge

    patcher = tiny_models.sd15(dtype=weights)
    prompt = tiny_models.clip_conditioning(1, 768)[0]
    denoiser = bridge.ComfyDenoiser(patcher, [prompt], prompt, torch.device(device), None, None, autocast)
    assert denoiser.autocast_dtype == expect_autocast
    assert denoiser.needs_grad_scaling == expect_scaling
