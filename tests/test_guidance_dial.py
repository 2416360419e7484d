"""The guidance dial (issue 14): a dial refiner trained over a range of CFG scales, and DICE Refine
Conditioning's guidance_scale for it and for the paper's single-scale refiner."""

import logging

import pytest
import torch

from dice_core.fileformat import GUIDANCE_KEYS, RefinerBundle, RefinerFileError, load_refiner, save_refiner
from dice_core.refiner import Refiner, refine
from dice_core.training import TrainConfig, guidance_range, teacher_trajectories
from dice_testkit import tiny_models

UNIT_ROUNDOFF = 2.0**-24


def _dial(dim: int = 32, reference: float = 5.0, seed: int = 0) -> Refiner:
    torch.manual_seed(seed)
    return Refiner(dim, inner_dim=64, heads=8, guidance_reference=reference)


def test_a_dial_refiner_at_w_1_leaves_the_prompt_exactly_as_it_was():
    """CFG at scale 1 is the plain prompt, and the dial's change is multiplied by w - 1."""
    r = _dial()
    with torch.no_grad():
        for p in r.guidance.parameters():  # a trained dial, not the zero-initialised one
            p.normal_()
        c, uc = torch.randn(2, 6, 32), torch.randn(1, 6, 32)
        assert torch.equal(refine(r, c, uc, 1.0, "none", guidance=1.0), c)
        assert not torch.equal(refine(r, c, uc, 1.0, "none", guidance=3.0), c)


def test_a_new_dial_refiner_starts_as_the_papers_with_its_change_scaled_linearly_in_w():
    """GuidanceFilm's last layer starts at zero, so before training the dial is strength (w - 1) / (ref - 1)."""
    dial = _dial()
    plain = Refiner(32, inner_dim=64, heads=8)
    plain.load_state_dict({k: v for k, v in dial.state_dict().items() if not k.startswith("guidance.")})
    c, uc = torch.randn(3, 6, 32), torch.randn(1, 6, 32)
    w = torch.tensor([2.0, 5.0, 9.0])
    with torch.no_grad():
        got = refine(dial, c, uc, 1.0, "none", guidance=w)
        want = torch.cat([refine(plain, c[i:i + 1], uc, (float(w[i]) - 1) / 4, "none") for i in range(3)])
    # The same products; only the scale (w - 1) / 4 is rounded once in float32 on one side and in float64 on the
    # other, and c + s * d then rounds once more: a few units of roundoff of |c| + |s * d|.
    bound = 4 * UNIT_ROUNDOFF * float(want.abs().max() + (want - c).abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=bound)


def test_a_dial_refiner_without_a_scale_uses_its_reference():
    r = _dial(reference=6.0)
    with torch.no_grad():
        for p in r.guidance.parameters():
            p.normal_()
        c, uc = torch.randn(2, 6, 32), torch.randn(1, 6, 32)
        assert torch.equal(refine(r, c, uc, 1.0, "none"), refine(r, c, uc, 1.0, "none", guidance=6.0))


def test_a_dial_refiner_round_trips_through_its_file_and_the_papers_names_stay(tmp_path):
    r = _dial(reference=5.0)
    with torch.no_grad():
        for p in r.guidance.parameters():
            p.normal_()
    bundle = RefinerBundle(module=r, family="SD15", keep_rule="none", null_uc=torch.randn(1, 6, 32),
                           recipe={"guidance_scale": 5.0, "guidance_range": [2.0, 10.0]})
    path = str(tmp_path / "dial.safetensors")
    save_refiner(path, bundle)
    loaded = load_refiner(path)
    assert loaded.module.guidance_reference == 5.0 and loaded.guidance_range == (2.0, 10.0)
    for k, v in r.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v), k
    assert {k for k in r.state_dict() if not k.startswith("guidance.")} == set(Refiner(32, 64, 8).state_dict())
    assert "dial w 2-10" in loaded.describe()


def test_a_file_with_part_of_a_dial_is_refused_with_a_sentence(tmp_path):
    from safetensors.torch import load_file, save_file

    bundle = RefinerBundle(module=_dial(), family="SD15", keep_rule="none", recipe={"guidance_scale": 5.0})
    path = str(tmp_path / "dial.safetensors")
    save_refiner(path, bundle)
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    del tensors[GUIDANCE_KEYS[-1]]
    save_file(tensors, path, metadata=meta)
    with pytest.raises(RefinerFileError, match="some of a dial refiner's weights but not"):
        load_refiner(path)


def test_the_dial_range_is_checked():
    assert guidance_range(0.0, 0.0) is None
    assert guidance_range(2.0, 10.0) == (2.0, 10.0)
    with pytest.raises(ValueError, match="1 <= min < max"):
        guidance_range(10.0, 2.0)
    with pytest.raises(ValueError, match="guidance_scale 12 inside"):
        TrainConfig.from_recipe(guidance_scale=12.0, guidance_range=(2.0, 10.0)).validate()


def test_teacher_trajectories_guide_each_trajectory_with_its_own_scale():
    """Each trajectory draws one w from the range; every state's target is CFG at that w; the noise is the
    same as without a dial, because the scales come from their own stream."""
    denoiser = tiny_models.LinearDenoiser()
    dial_cfg = TrainConfig.from_recipe("dice-pack", teacher_steps=3, samples_per_prompt=2, batch_size=3, seed=1,
                                       guidance_range=(2.0, 10.0))
    data = teacher_trajectories(denoiser, 3, (4, 4, 4), dial_cfg)
    single = teacher_trajectories(denoiser, 3, (4, 4, 4), TrainConfig.from_recipe(
        "dice-pack", teacher_steps=3, samples_per_prompt=2, batch_size=3, seed=1))
    assert single.guidance is None and data.guidance.shape == (len(data),)
    assert bool(((data.guidance >= 2.0) & (data.guidance <= 10.0)).all())
    first = data.step_of_sample == 0
    assert torch.equal(data.x[first], single.x[single.step_of_sample == 0])
    x0_c, x0_uc = denoiser.teacher(data.x, data.sigma, data.idx)
    want = x0_uc + data.guidance.view(-1, 1, 1, 1) * (x0_c - x0_uc)
    torch.testing.assert_close(data.target, want, rtol=4 * UNIT_ROUNDOFF, atol=0)
    # one w per trajectory: its states at every step share it
    # recorded batch by batch (6 trajectories in batches of 3), each batch step by step
    per_trajectory = data.guidance.view(2, 3, 3)
    assert torch.equal(per_trajectory, per_trajectory[:, :1].expand_as(per_trajectory))
    assert len(data.guidance.unique()) == 6



def test_resampled_dial_targets_are_cfg_at_a_fresh_scale_for_the_same_states():
    """dial_targets="resampled": each drawn state keeps its x and sigma, and gets a fresh w from the range with
    CFG's target at that w, rebuilt from the stored guidance gap (no teacher call)."""
    from dice_core.training import sample_batch

    denoiser = tiny_models.LinearDenoiser()
    base = dict(teacher_steps=3, samples_per_prompt=4, batch_size=3, seed=1, guidance_range=(2.0, 10.0))
    per_trajectory = TrainConfig.from_recipe("dice-pack", **base)
    resampled = TrainConfig.from_recipe("dice-pack", dial_targets="resampled", **base)
    data = teacher_trajectories(denoiser, 3, (4, 4, 4), resampled)
    assert teacher_trajectories(denoiser, 3, (4, 4, 4), per_trajectory).guidance_gap is None
    x0_c, x0_uc = denoiser.teacher(data.x, data.sigma, data.idx)
    torch.testing.assert_close(data.guidance_gap, x0_c - x0_uc, rtol=0, atol=0)
    x, sigma, idx, target, w, _ = sample_batch(denoiser, data, resampled, step=7)
    x_traj, sigma_traj, idx_traj, _, w_traj, _ = sample_batch(denoiser, data, per_trajectory, step=7)
    assert torch.equal(x, x_traj) and torch.equal(sigma, sigma_traj) and torch.equal(idx, idx_traj)
    assert bool(((w >= 2.0) & (w <= 10.0)).all()) and not torch.equal(w, w_traj)
    c, uc = denoiser.teacher(x, sigma, idx)
    want = uc + w.view(-1, 1, 1, 1) * (c - uc)
    # target + (w - w_traj) * gap against uc + w * gap: a few roundings of terms no larger than these.
    scale = (want.abs() + (w - w_traj).abs().view(-1, 1, 1, 1) * (c - uc).abs() + uc.abs()
             + w.view(-1, 1, 1, 1) * (c - uc).abs())
    assert bool(((target - want).abs() <= 4 * UNIT_ROUNDOFF * scale).all())


def test_resampled_dial_targets_must_be_a_known_mode():
    with pytest.raises(ValueError, match="dial_targets must be one of"):
        TrainConfig.from_recipe(dial_targets="fresh").validate()

# ---- DICE Refine Conditioning's guidance_scale ----------------------------------------------------------------

def _bundle(dial: bool) -> RefinerBundle:
    torch.manual_seed(0)
    module = Refiner(768, guidance_reference=5.0 if dial else None)
    if dial:
        with torch.no_grad():
            for p in module.guidance.parameters():
                p.normal_(std=0.1)
    recipe = {"guidance_scale": 5.0, "guidance_range": [2.0, 10.0] if dial else None}
    return RefinerBundle(module=module, family="SD15", keep_rule="clip_chunk_start",
                         null_uc=tiny_models.clip_conditioning(9, 768)[0][0], recipe=recipe)


def test_guidance_scale_0_or_the_trained_scale_is_the_refiner_as_trained(comfy_nodes):
    node = comfy_nodes["DiceRefineConditioning"]
    pos = tiny_models.clip_conditioning(1, 768)
    for dial in (False, True):
        b = _bundle(dial)
        plain = node.execute(pos, b, 1.0).args[0][0][0]
        assert torch.equal(node.execute(pos, b, 1.0, guidance_scale=0.0).args[0][0][0], plain)
        assert torch.equal(node.execute(pos, b, 1.0, guidance_scale=5.0).args[0][0][0], plain)


def test_a_dial_refiner_follows_guidance_scale(comfy_nodes, caplog):
    node = comfy_nodes["DiceRefineConditioning"]
    b = _bundle(True)
    pos = tiny_models.clip_conditioning(1, 768)
    at_8 = node.execute(pos, b, 1.0, guidance_scale=8.0).args[0][0][0]
    assert torch.equal(at_8, b.refine(pos[0][0], None, 1.0, 8.0))
    assert not torch.equal(at_8, node.execute(pos, b, 1.0).args[0][0][0])
    assert "outside the range" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="ComfyUI-DICE"):
        node.execute(pos, b, 1.0, guidance_scale=12.0)
    assert "outside the range this dial refiner was trained on (2 to 10)" in caplog.text


def test_a_single_scale_refiner_maps_guidance_scale_onto_strength_and_says_so(comfy_nodes, caplog):
    node = comfy_nodes["DiceRefineConditioning"]
    b = _bundle(False)
    pos = tiny_models.clip_conditioning(1, 768)
    with caplog.at_level(logging.WARNING, logger="ComfyUI-DICE"):
        at_3 = node.execute(pos, b, 1.0, guidance_scale=3.0).args[0][0][0]
    assert torch.equal(at_3, b.refine(pos[0][0], None, 0.5))  # (3 - 1) / (5 - 1)
    assert "trained for one guidance scale, w=5" in caplog.text and "guidance_range_min/max" in caplog.text
    with pytest.raises(ValueError, match="below 1; use 0"):
        node.execute(pos, b, 1.0, guidance_scale=0.5)
    imported = _bundle(False)
    imported.recipe = {}
    with pytest.raises(ValueError, match="does not record the guidance scale"):
        node.execute(pos, imported, 1.0, guidance_scale=3.0)


# ---- training a dial refiner with the node ------------------------------------------------------------------

def _node_args(**kw):
    return tiny_models.train_node_args(**{"steps": 4, "filename_prefix": "dial", **kw})


@pytest.mark.parametrize("recipe", ["dice-pack", "paper"])
def test_train_node_trains_a_dial_refiner_that_saves_loads_and_resumes_only_as_one(comfy_nodes, comfy_dirs, recipe):
    node = comfy_nodes["DiceTrainRefiner"]
    with torch.inference_mode():
        patcher = tiny_models.sd15(seed=1)
        bundle = node.execute(patcher, clip=tiny_models.TextClip(), **_node_args(recipe=recipe, guidance_range_min=2.0,
                                                                     guidance_range_max=10.0)).args[0]
    assert bundle.module.guidance is not None and bundle.guidance_range == (2.0, 10.0)
    assert any(p.abs().sum() > 0 for p in bundle.module.guidance.net[2].parameters()), "the dial itself trained"
    comfy_nodes["DiceSaveRefiner"].execute(bundle, "dial_saved")
    loaded = comfy_nodes["DiceLoadRefiner"].execute("dial_saved_00001.safetensors").args[0]
    assert loaded.guidance_range == (2.0, 10.0) and loaded.module.guidance_reference == 5.0
    with torch.inference_mode():
        more = node.execute(patcher, clip=tiny_models.TextClip(), resume_from=loaded,
                            **_node_args(recipe=recipe, steps=6, guidance_range_min=2.0, guidance_range_max=10.0)).args[0]
        assert more.train_step == 6
        with pytest.raises(ValueError, match="is a dial refiner .* resume with the guidance range"):
            node.execute(patcher, clip=tiny_models.TextClip(), resume_from=loaded, **_node_args(recipe=recipe, steps=6))
