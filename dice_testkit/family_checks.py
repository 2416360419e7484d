"""The checks every model family passes, on a tiny model of its real architecture (dice_testkit/tiny_families/).

Each tests/test_family_<name>.py runs them for one family (pytest marker `families`):
- DICE Train Refiner's training path (calc_cond_batch with the family's extra_conds) brings the held-out
  distillation loss below the unrefined prompt's;
- DICE Refine Conditioning's output makes KSampler at cfg 1 send half the model rows of cfg w (counted);
  strength 0 returns the input exactly;
- the refiner file records the family, and refining for another family's MODEL fails with a sentence
  naming both.

Each passing check writes what it measured to .family-results/<ComfyUI version>/<family>.json;
scripts/family_table.py builds the README's family table from those records.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from dice_comfy import session
from dice_core.fileformat import load_refiner, save_refiner
from dice_core.refiner import count_parameters
from dice_core.training import TrainConfig
from dice_testkit import harness, tiny_models

RESULTS = os.environ.get("DICE_FAMILY_RESULTS") or os.path.join(harness.REPO, ".family-results")
GUIDANCE = 5.0
SAMPLE_STEPS = 3


def runtime_mark(family):
    """Skip on a runtime the family's module does not list (a family that only 0.33 has)."""
    version = harness.comfyui_version()
    return pytest.mark.skipif(version not in family.RUNTIMES, reason=f"{family.FAMILY} is not in ComfyUI {version}")


def prompt_split(family) -> tuple[list, list, list]:
    """Training prompts, held-out prompts (unseen combinations of seen words) and the empty prompt.
    Every third training prompt drops its last word, so encoders without padding see two lengths."""
    train_words, held_out_words = tiny_models.vocab_split()
    train = [family.prompt(w[:2] if i % 3 == 0 else w) for i, w in enumerate(train_words)]
    return train, [family.prompt(w) for w in held_out_words], family.prompt(())


def size_of(family) -> tuple[int, int, int]:
    return family.WIDTH, family.HEIGHT, family.FRAMES or 1


def record(family, **figures) -> None:
    folder = os.path.join(RESULTS, harness.comfyui_version())
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{family.FAMILY}.json")
    data = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    data.update(figures, family=family.FAMILY, embed_dim=family.EMBED_DIM, notes=family.NOTES)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)


class Trained:
    """A refiner trained for the family by the training session the node uses. A module may set
    TRAINING (e.g. {"batch_size": 2}) where its real token layout makes the refiner itself the cost:
    Wan's and Cosmos's 512 padded rows, HiDream's 32 llama layers."""

    def __init__(self, family, steps: int = 40, warmup: int = 5, lr: float = 1e-3, batch_size: int = 4,
                 samples_per_prompt: int = 2):
        overrides = getattr(family, "TRAINING", {})
        steps, batch_size = overrides.get("steps", steps), overrides.get("batch_size", batch_size)
        self.family = family
        self.patcher = family.build()
        self.train, self.held_out, self.uc = prompt_split(family)
        width, height, frames = size_of(family)
        cfg = TrainConfig.from_recipe("dice-pack", steps=steps, batch_size=batch_size, teacher_steps=6, samples_per_prompt=samples_per_prompt,
                                      seed=0, guidance_scale=GUIDANCE, loss="l2", warmup=warmup, lr=lr)
        result = session.run_training(self.patcher, self.train, self.uc, cfg,
                                      session.SessionOptions(width=width, height=height, frames=frames))
        assert result.bundle.train_step == steps and len(result.losses) == steps
        self.bundle = result.bundle


def check_latent_shape(family, trained: Trained) -> None:
    """The data-free teacher starts from the latent the family's own empty-latent node makes."""
    import comfy.sample

    shape = session.latent_shape(trained.patcher, *size_of(family))
    # What the sampler hands the model: Qwen-Image's and Cosmos's 4-D empty latents become 5-D.
    sampled = comfy.sample.fix_empty_latent_channels(trained.patcher, family.empty_latent())
    assert (1, *shape) == tuple(sampled.shape)


def check_held_out_loss_falls(family, trained: Trained) -> None:
    width, height, frames = size_of(family)
    held = tiny_models.held_out_evaluation(trained.patcher, trained.bundle, trained.held_out, trained.uc,
                                           (width, height, frames), loss="l2", teacher_steps=4)
    print(f"{family.FAMILY}: held-out loss unrefined {held.unrefined:.4g} -> refined {held.refined:.4g} "
          f"({held.refined / held.unrefined:.3f}x)")
    if trained.bundle.pad_to is None:  # a padded family's student sees more tokens than the teacher, by design
        assert held.student_vs_teacher < 1e-4, "student and teacher must run the model identically at alpha 0"
    assert held.refined < held.unrefined
    record(family, held_out_unrefined=held.unrefined, held_out_refined=held.refined,
           held_out_ratio=held.refined / held.unrefined, refiner_parameters=count_parameters(trained.bundle.module))


def _rows(patcher, cfg: float, positive, negative, latent) -> list[int]:
    import nodes

    counter = tiny_models.CallCounter()
    (out,) = nodes.common_ksampler(counter.attach(patcher), 7, SAMPLE_STEPS, cfg, "euler", "normal", positive, negative,
                                   {"samples": latent})
    assert torch.isfinite(out["samples"]).all()
    return counter.batches


def check_cfg1_halves_the_rows(family, trained: Trained, comfy_nodes) -> None:
    refine = comfy_nodes["DiceRefineConditioning"]
    positive = [trained.held_out[0]]
    negative = [trained.uc]
    refined = refine.execute(positive, trained.bundle, 1.0, model=trained.patcher).args[0]
    assert not torch.equal(refined[0][0], positive[0][0])
    latent = family.empty_latent()
    cfg_w = _rows(trained.patcher, GUIDANCE, positive, negative, latent)
    cfg_1 = _rows(trained.patcher, 1.0, refined, negative, latent)
    assert cfg_1 == [1] * SAMPLE_STEPS
    assert sum(cfg_w) == 2 * sum(cfg_1)
    record(family, rows_cfg_w=sum(cfg_w), rows_dice=sum(cfg_1), sample_steps=SAMPLE_STEPS)


def check_strength_zero_is_the_input(family, trained: Trained, comfy_nodes) -> None:
    positive = [trained.held_out[0]]
    out = comfy_nodes["DiceRefineConditioning"].execute(positive, trained.bundle, 0.0, model=trained.patcher).args[0]
    (tensor, extras), (out_tensor, out_extras) = positive[0], out[0]
    assert torch.equal(out_tensor, tensor) and out_tensor.shape == tensor.shape
    assert out_extras.keys() == extras.keys() and all(out_extras[k] is extras[k] for k in extras)
    record(family, strength_zero_exact=True)


def check_the_file_names_the_family(family, trained: Trained, comfy_nodes, tmp_path) -> None:
    path = str(tmp_path / "refiner.safetensors")
    save_refiner(path, trained.bundle)
    loaded = load_refiner(path)
    assert loaded.family == family.FAMILY
    other = tiny_models.sdxl() if family.FAMILY == "SD15" else tiny_models.sd15()
    other_name = type(other.model.model_config).__name__
    with pytest.raises(ValueError, match=f"trained for {family.FAMILY}\\b.*the MODEL is {other_name}\\b"):
        comfy_nodes["DiceRefineConditioning"].execute([trained.held_out[0]], loaded, 1.0, model=other)
    record(family, other_family_refused=other_name)


# The tests each family module runs. A module sets `family` (its dice_testkit/tiny_families module) and
# imports these names; pytest collects them there, and `trained` builds once per module.
@pytest.fixture(scope="module")
def trained(request, comfy_nodes):
    return Trained(request.module.family)


def test_teacher_latent_matches_the_family_empty_latent(request, trained):
    check_latent_shape(request.module.family, trained)


def test_training_beats_the_unrefined_prompt_on_held_out_prompts(request, trained):
    check_held_out_loss_falls(request.module.family, trained)


def test_cfg1_on_refined_conditioning_sends_half_the_rows_of_cfg(request, trained, comfy_nodes):
    check_cfg1_halves_the_rows(request.module.family, trained, comfy_nodes)


def test_strength_zero_returns_the_input_exactly(request, trained, comfy_nodes):
    check_strength_zero_is_the_input(request.module.family, trained, comfy_nodes)


def test_the_file_records_the_family_and_another_family_is_refused(request, trained, comfy_nodes, tmp_path):
    check_the_file_names_the_family(request.module.family, trained, comfy_nodes, tmp_path)
