"""Timestep-aware refinement: one refiner per range of the sampling, delivered as ComfyUI's own timestep-range
CONDITIONING entries (start_percent/end_percent), so KSampler at cfg 1 still makes one model pass per step."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from dice_core.fileformat import RefinerBundle, RefinerFileError, load_refiner, save_refiner
from dice_core.refiner import Refiner, StrengthSchedule, stage_ranges
from dice_core.training import PromptBank as Bank
from dice_core.training import (
    TrainConfig,
    parse_stage_edges,
    sample_batch,
    stage_of_sigma,
    teacher_trajectories,
    train_refiner,
    with_stages,
)
from dice_testkit import tiny_models

DIM = 16


def _staged(edges=(0.3, 0.6), seed=0, inner=32):
    torch.manual_seed(seed)
    return Refiner(DIM, inner, 4, stage_edges=edges)


def test_stage_zero_keeps_the_papers_parameter_names_and_later_stages_are_their_own_refiners():
    single, staged = Refiner(DIM, 32, 4), _staged()
    names = set(staged.state_dict())
    assert set(single.state_dict()) <= names
    assert names - set(single.state_dict()) == {f"later_stages.{i}.{k}" for i in (0, 1) for k in single.state_dict()}
    assert staged.stage_count == 3 and Refiner(**staged.config()).stage_edges == (0.3, 0.6)
    assert stage_ranges(staged.stage_edges) == [(0.0, 0.3), (0.3, 0.6), (0.6, 1.0)]


def test_a_stage_per_prompt_refines_each_row_with_that_stage_alone():
    refiner = _staged()
    c, uc = torch.randn(6, 5, DIM), torch.randn(1, 7, DIM)
    stage = torch.tensor([2, 0, 1, 2, 0, 0])
    with torch.no_grad():
        out = refiner(c, uc, stage=stage)
        for k in range(3):
            rows = (stage == k).nonzero()[:, 0]
            # the same rows through the same layers: the same arithmetic, so exactly equal
            assert torch.equal(out[rows], refiner.stage_module(k).stage_delta(c[rows], uc))
        assert torch.equal(refiner(c, uc, stage=1), refiner.stage_module(1).stage_delta(c, uc))
        assert torch.equal(refiner(c, uc), refiner.stage_delta(c, uc))  # no stage: stage 0, the paper's layers
    with pytest.raises(ValueError, match="stage 3 does not exist: this refiner has 3 timestep stage"):
        refiner(c, uc, stage=3)


def test_each_stage_learns_only_from_the_rows_of_its_range():
    refiner = _staged()
    c, uc = torch.randn(4, 5, DIM), torch.randn(1, 5, DIM)
    refiner(c, uc, stage=torch.tensor([1, 1, 2, 2])).square().sum().backward()
    grads = {k: refiner.stage_module(k).fc1.weight.grad for k in range(3)}
    assert grads[0] is None or not grads[0].abs().sum()
    assert grads[1].abs().sum() > 0 and grads[2].abs().sum() > 0


@pytest.mark.parametrize("text", ["0.5, 0.3", "0, 0.5", "0.5 1", "0.2,0.2", "early"])
def test_stage_edges_that_do_not_split_the_sampling_get_a_sentence(text):
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_stage_edges(text)


def test_stage_edges_parse_from_the_node_text():
    assert parse_stage_edges("") == () and parse_stage_edges(" 0.08, 0.24,0.5 ") == (0.08, 0.24, 0.5)


def _bundle(module):
    return RefinerBundle(module=module, family="SD15", null_uc=torch.zeros(1, 5, DIM))


def test_a_staged_file_round_trips_and_says_format_2_while_single_stage_files_stay_format_1(tmp_path):
    staged = _staged()
    path = save_refiner(str(tmp_path / "staged.safetensors"), _bundle(staged))
    loaded = load_refiner(path)
    assert loaded.module.stage_edges == (0.3, 0.6) and loaded.stage_ranges == [(0.0, 0.3), (0.3, 0.6), (0.6, 1.0)]
    for k, v in staged.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v), k
    assert "3 timestep stages" in loaded.describe()
    single = save_refiner(str(tmp_path / "single.safetensors"), _bundle(Refiner(DIM, 32, 4)))
    versions = {}
    for name, p in (("staged", path), ("single", single)):
        with safe_open(p, framework="pt") as f:
            versions[name] = f.metadata()["format_version"]
    assert versions == {"staged": "2", "single": "1"}
    assert load_refiner(single).module.stage_count == 1


def _rewrite(path, out, drop=(), meta_update=None):
    from safetensors.torch import save_file

    with safe_open(path, framework="pt") as f:
        meta = {**f.metadata(), **(meta_update or {})}
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in drop}
    save_file(tensors, out, metadata=meta)
    return out


def test_a_staged_file_whose_stages_do_not_add_up_is_refused_with_a_sentence(tmp_path):
    path = save_refiner(str(tmp_path / "staged.safetensors"), _bundle(_staged()))
    fewer = _rewrite(path, str(tmp_path / "fewer.safetensors"), meta_update={"timestep_stages": json.dumps([0.5])})
    with pytest.raises(RefinerFileError, match="names 2 timestep stages but the file holds weights for 3"):
        load_refiner(fewer)
    cut = _rewrite(path, str(tmp_path / "cut.safetensors"), drop=("later_stages.1.fc2.bias",))
    with pytest.raises(RefinerFileError, match="has no 'later_stages.1.fc2.bias'"):
        load_refiner(cut)
    bad = _rewrite(path, str(tmp_path / "bad.safetensors"), meta_update={"timestep_stages": "[0.6, 0.3]"})
    with pytest.raises(RefinerFileError, match="'timestep_stages' is not a list of stage edges"):
        load_refiner(bad)


def _data(edges=(0.3, 0.6), teacher_steps=10):
    cfg = TrainConfig.from_recipe("dice-pack", teacher_steps=teacher_steps, samples_per_prompt=2, batch_size=3, seed=0,
                                  timestep_stages=edges)
    denoiser = tiny_models.LinearDenoiser()
    data = teacher_trajectories(denoiser, 3, (4, 4, 4), cfg)
    return denoiser, cfg, with_stages(data, denoiser, _staged(edges))


def test_each_state_s_stage_follows_its_sigma_and_the_edges():
    denoiser, cfg, data = _data()
    # LinearDenoiser's sigma falls linearly from 10 at percent 0 to 0 at percent 1: edges 0.3 and 0.6 are sigmas 7, 4
    expected = (data.sigma < 7).long() + (data.sigma < 4).long()
    assert torch.equal(data.stage, expected) and data.stage_count == 3
    assert torch.equal(stage_of_sigma(torch.tensor([7.0, 6.99, 4.0, 3.99]), [7.0, 4.0]), torch.tensor([0, 1, 1, 2]))


def test_every_training_step_draws_batch_size_states_from_each_stage_and_ranks_split_it_as_one_process_would():
    denoiser, cfg, data = _data()
    x, sigma, idx, target, guidance, stage = sample_batch(denoiser, data, cfg, step=5)
    assert len(x) == cfg.batch_size * 3 and stage.bincount().tolist() == [cfg.batch_size] * 3
    assert torch.equal(stage, data.stage[[int((data.x == row).flatten(1).all(1).nonzero()[0]) for row in x]])
    whole = sample_batch(denoiser, data, TrainConfig(**{**cfg.as_dict(), "batch_size": 6}), step=5)
    halves = [sample_batch(denoiser, data, cfg, step=5, rank=r, world_size=2) for r in (0, 1)]
    for i in range(6):
        assert torch.equal(torch.cat([halves[0][i], halves[1][i]]), whole[i]) if whole[i] is not None else True


def test_a_stage_that_holds_no_teacher_step_is_refused_before_training():
    denoiser = tiny_models.LinearDenoiser()
    cfg = TrainConfig.from_recipe("dice-pack", teacher_steps=3, samples_per_prompt=1, batch_size=2)
    data = teacher_trajectories(denoiser, 2, (4, 4, 4), cfg)
    with pytest.raises(ValueError, match=r"stage\(s\) \[1\] of edges \[0.1, 0.2\] hold none of the teacher's 3 sampler "
                                         r"steps: move the edges apart or raise teacher_steps"):
        with_stages(data, denoiser, _staged((0.1, 0.2)))


@pytest.mark.parametrize("recipe", ["paper"])
def test_timestep_stages_need_the_teacher_s_trajectories(recipe):
    with pytest.raises(ValueError, match="timestep stages train on the teacher's own trajectories"):
        TrainConfig.from_recipe(recipe, timestep_stages=(0.5,)).validate()


def test_training_updates_every_stage_from_one_loop():
    denoiser, cfg, data = _data()
    cfg = TrainConfig(**{**cfg.as_dict(), "steps": 5})
    module = _staged()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    bank = Bank(c=torch.randn(3, 5, DIM), uc=torch.randn(1, 5, DIM))
    result = train_refiner(RefinerBundle(module=module, keep_rule="none"), denoiser, bank, data, cfg)
    assert result.steps_done == 5 and all(torch.isfinite(torch.tensor(result.losses)))
    for k in range(3):
        name = "fc1.weight" if k == 0 else f"later_stages.{k - 1}.fc1.weight"
        assert not torch.equal(module.state_dict()[name], before[name]), f"stage {k} did not train"
    names = set(result.bundle.optimizer_state["tensors"])
    assert "later_stages.1.fc2.bias.exp_avg" in names and "fc2.bias.exp_avg" in names


# ---- on a ComfyUI model: the node trains it, the entries reach KSampler, one pass per step -----------------------

EDGES = "0.3, 0.6"


@pytest.fixture(scope="module")
def staged_sd15(comfy_nodes):
    node = comfy_nodes["DiceTrainRefiner"]
    with torch.inference_mode():
        patcher = tiny_models.sd15(seed=1)
        bundle = node.execute(patcher, clip=tiny_models.TextClip(),
                              **tiny_models.train_node_args(steps=3, teacher_steps=6, timestep_stages=EDGES)).args[0]
    return patcher, bundle


def test_the_train_node_trains_saves_loads_and_resumes_a_staged_refiner(staged_sd15, comfy_nodes, comfy_dirs):
    patcher, bundle = staged_sd15
    assert bundle.module.stage_count == 3 and list(bundle.recipe["timestep_stages"]) == [0.3, 0.6]
    comfy_nodes["DiceSaveRefiner"].execute(bundle, "staged")
    loaded = comfy_nodes["DiceLoadRefiner"].execute("staged_00001.safetensors").args[0]
    assert loaded.module.stage_edges == (0.3, 0.6) and loaded.train_step == 3
    node = comfy_nodes["DiceTrainRefiner"]
    with torch.inference_mode():
        more = node.execute(patcher, clip=tiny_models.TextClip(), resume_from=loaded,
                            **tiny_models.train_node_args(steps=5, teacher_steps=6, timestep_stages=EDGES)).args[0]
        assert more.train_step == 5
        with pytest.raises(ValueError, match=r"has timestep stage edges \[0.3, 0.6\], but these settings ask for \[\]"):
            node.execute(patcher, clip=tiny_models.TextClip(), resume_from=loaded,
                         **tiny_models.train_node_args(steps=6, teacher_steps=6))


def test_real_latents_with_timestep_stages_get_a_sentence_before_any_training(comfy_nodes):
    with torch.inference_mode(), pytest.raises(ValueError, match="timestep stages train on the teacher's own "
                                                                  "trajectories .* without real latents"):
        comfy_nodes["DiceTrainRefiner"].execute(tiny_models.sd15(seed=1), clip=tiny_models.TextClip(),
                                                latents={"samples": torch.zeros(2, 4, 8, 8)},
                                                **tiny_models.train_node_args(timestep_stages="0.5"))


def test_refining_makes_one_entry_per_stage_with_only_comfyui_s_range_keys_added(staged_sd15, comfy_nodes):
    patcher, bundle = staged_sd15
    entry = tiny_models.TextClip().encode_from_tokens_scheduled("a b")[0]
    refine = comfy_nodes["DiceRefineConditioning"]
    out = refine.execute([entry], bundle, 1.0, model=patcher).args[0]
    assert [(e[1]["start_percent"], e[1]["end_percent"]) for e in out] == [(0.0, 0.3), (0.3, 0.6), (0.6, 1.0)]
    for k, (tensor, extras) in enumerate(out):
        assert extras.keys() - entry[1].keys() == {"start_percent", "end_percent"}
        assert all(extras[key] is entry[1][key] for key in entry[1])
        assert torch.equal(tensor, bundle.refine(entry[0], None, 1.0, None, k))
    assert not torch.equal(out[0][0], out[2][0])
    # an entry already scheduled for part of the sampling keeps to it: the stages are cut to its range
    scheduled = [entry[0], {**entry[1], "start_percent": 0.5, "end_percent": 0.9}]
    cut = refine.execute([scheduled], bundle, 1.0, model=patcher).args[0]
    assert [(e[1]["start_percent"], e[1]["end_percent"]) for e in cut] == [(0.5, 0.6), (0.6, 0.9)]


class _CondRecorder(tiny_models.CallCounter):
    """Also records the sigma and the prompt tensor of each model call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __call__(self, apply_model, args):
        self.calls.append((float(args["timestep"][0]), args["c"]["c_crossattn"].clone()))
        return super().__call__(apply_model, args)


def _record_ksampler_at_cfg_1(patcher, refined, entry, latent, steps) -> list[tuple[float, torch.Tensor]]:
    """(sigma, prompt tensor) of each model call of KSampler at cfg 1 on the refined entries, checking that each step
    made one model pass of one row."""
    import nodes

    recorder = _CondRecorder()
    with torch.inference_mode():
        nodes.common_ksampler(recorder.attach(patcher), 7, steps, 1.0, "euler", "normal", refined, [entry],
                              {"samples": latent})
    assert recorder.batches == [1] * steps
    return recorder.calls


def _sigmas_at(patcher, entry, percents) -> list[float]:
    """The sigmas of sampling percents, through the same percent_to_sigma ComfyUI's timestep ranges use."""
    from dice_comfy.bridge import ComfyDenoiser

    denoiser = ComfyDenoiser(patcher, [entry], entry, "cpu", None, None)
    return [denoiser.sigma_at_percent(p) for p in percents]


def _check_each_step_uses_the_stage_training_assigned(patcher, bundle, entry, latent, steps, comfy_nodes):
    """KSampler at cfg 1 on the refined entries: one model pass per step, and each pass's prompt is the entry of the
    stage that training assigns to that step's sigma."""
    refined = comfy_nodes["DiceRefineConditioning"].execute([entry], bundle, 1.0, model=patcher).args[0]
    edge_sigmas = _sigmas_at(patcher, entry, bundle.module.stage_edges)
    seen = set()
    for sigma, tensor in _record_ksampler_at_cfg_1(patcher, refined, entry, latent, steps):
        stage = int(stage_of_sigma(torch.tensor([sigma]), edge_sigmas)[0])
        seen.add(stage)
        assert torch.equal(tensor.to(refined[stage][0]), refined[stage][0]), (sigma, stage)
    assert seen == set(range(bundle.module.stage_count))


@pytest.mark.parametrize("steps", [7, 12])
def test_ksampler_at_cfg_1_makes_one_pass_per_step_with_the_stage_training_assigned_to_that_sigma(staged_sd15, comfy_nodes,
                                                                                                  steps):
    patcher, bundle = staged_sd15
    entry = tiny_models.TextClip().encode_from_tokens_scheduled("a b")[0]
    _check_each_step_uses_the_stage_training_assigned(patcher, bundle, entry, torch.zeros(1, 4, 8, 8), steps, comfy_nodes)


def test_a_flow_model_s_stages_follow_its_own_shifted_sigmas(comfy_nodes):
    """SD3's rectified flow (sigma in [0, 1], shift 3) maps percents to sigmas unlike SD1.5's discrete schedule;
    the stages follow whatever the model's own model_sampling says."""
    from dice_comfy import session
    from dice_testkit.family_checks import prompt_split
    from dice_testkit.tiny_families import sd3 as family

    patcher = family.build()
    train, held_out, uc = prompt_split(family)
    cfg = TrainConfig.from_recipe("dice-pack", steps=2, batch_size=2, teacher_steps=6, samples_per_prompt=1,
                                  timestep_stages=(0.3, 0.6))
    bundle = session.run_training(patcher, train[:3], uc, cfg, session.SessionOptions(width=64, height=64)).bundle
    assert bundle.family == "SD3" and bundle.module.stage_count == 3
    _check_each_step_uses_the_stage_training_assigned(patcher, bundle, held_out[0], family.empty_latent(), 9, comfy_nodes)


def test_the_sharpening_plot_averages_the_stages():
    from dice_core.training import sharpening_pattern

    staged = _staged(edges=(0.5,))
    with torch.no_grad():  # stage 1 changes nothing, so the average is half of stage 0's change, exactly
        staged.later_stages[0].fc2.weight.zero_()
        staged.later_stages[0].fc2.bias.zero_()
    single = Refiner(DIM, 32, 4)
    single.load_state_dict({k: v for k, v in staged.state_dict().items() if not k.startswith("later_stages.")})
    bank = Bank(c=torch.randn(3, 5, DIM), uc=torch.randn(1, 5, DIM))
    both = sharpening_pattern(RefinerBundle(module=staged, keep_rule="none"), bank)
    first = sharpening_pattern(RefinerBundle(module=single, keep_rule="none"), bank)
    assert first.abs().sum() > 0 and torch.equal(both, first / 2)


# ---- a strength schedule: one refiner, a weaker strength early and a stronger one late -----------------------

def test_a_strength_schedule_reads_back_from_its_label_and_refuses_what_is_not_one():
    schedule = StrengthSchedule(1.0, 2.0, 0.3)
    assert schedule.phases() == [(1.0, (0.0, 0.3)), (2.0, (0.3, 1.0))]
    assert StrengthSchedule.parse(schedule.label()) == schedule and schedule.label() == "1>2@0.3"
    # one strength throughout: late_from 1, equal strengths, or the late strength from the first step
    assert StrengthSchedule.parse("1.5").phases() == [(1.5, (0.0, 1.0))] and StrengthSchedule.parse(1.5).label() == "1.5"
    assert StrengthSchedule(1.0, 2.0, 1.0).phases() == [(1.0, (0.0, 1.0))]
    assert StrengthSchedule(2.0, 2.0, 0.4).phases() == [(2.0, (0.0, 1.0))]
    assert StrengthSchedule(1.0, 2.0, 0.0).phases() == [(2.0, (0.0, 1.0))] and StrengthSchedule(1.0, 2.0, 0.0).label() == "2"
    with pytest.raises(ValueError, match="late_from is a sampling percent between 0 and 1"):
        StrengthSchedule(1.0, 2.0, 1.5)
    with pytest.raises(ValueError, match="late_strength must be a number of at least 0"):
        StrengthSchedule(1.0, -1.0, 0.5)
    with pytest.raises(ValueError, match="reads early>late@percent"):
        StrengthSchedule.parse("1>2")


@pytest.fixture(scope="module")
def single_sd15(comfy_nodes):
    with torch.inference_mode():
        patcher = tiny_models.sd15(seed=1)
        bundle = comfy_nodes["DiceTrainRefiner"].execute(patcher, clip=tiny_models.TextClip(),
                                                         **tiny_models.train_node_args(steps=3, teacher_steps=6)).args[0]
    return patcher, bundle


def test_a_strength_schedule_makes_one_entry_per_phase_with_only_comfyui_s_range_keys_added(single_sd15, comfy_nodes):
    patcher, bundle = single_sd15
    entry = tiny_models.TextClip().encode_from_tokens_scheduled("a b")[0]
    refine = comfy_nodes["DiceRefineConditioning"]
    out = refine.execute([entry], bundle, 1.0, model=patcher, late_strength=2.0, late_from=0.3).args[0]
    assert [(e[1]["start_percent"], e[1]["end_percent"]) for e in out] == [(0.0, 0.3), (0.3, 1.0)]
    for (tensor, extras), alpha in zip(out, (1.0, 2.0)):
        assert extras.keys() - entry[1].keys() == {"start_percent", "end_percent"}
        assert all(extras[key] is entry[1][key] for key in entry[1])
        assert torch.equal(tensor, bundle.refine(entry[0], None, alpha))
    # the defaults are one strength throughout: one entry, the input's keys and nothing else
    (tensor, extras), = refine.execute([entry], bundle, 1.5, model=patcher).args[0]
    assert extras == entry[1] and torch.equal(tensor, bundle.refine(entry[0], None, 1.5))
    # an entry scheduled for part of the sampling keeps to it
    scheduled = [entry[0], {**entry[1], "start_percent": 0.5, "end_percent": 0.9}]
    cut = refine.execute([scheduled], bundle, 1.0, late_strength=2.0, late_from=0.3).args[0]
    assert [(e[1]["start_percent"], e[1]["end_percent"]) for e in cut] == [(0.5, 0.9)]
    assert torch.equal(cut[0][0], bundle.refine(entry[0], None, 2.0))


def test_a_strength_schedule_on_a_staged_refiner_cuts_the_stages_at_the_switch(staged_sd15, comfy_nodes):
    patcher, bundle = staged_sd15  # stages (0, 0.3), (0.3, 0.6), (0.6, 1)
    entry = tiny_models.TextClip().encode_from_tokens_scheduled("a b")[0]
    out = comfy_nodes["DiceRefineConditioning"].execute([entry], bundle, 0.5, late_strength=1.5, late_from=0.45).args[0]
    expected = [(0, 0.5, (0.0, 0.3)), (1, 0.5, (0.3, 0.45)), (1, 1.5, (0.45, 0.6)), (2, 1.5, (0.6, 1.0))]
    assert [(e[1]["start_percent"], e[1]["end_percent"]) for e in out] == [r for _, _, r in expected]
    for (tensor, _), (stage, alpha, _) in zip(out, expected):
        assert torch.equal(tensor, bundle.refine(entry[0], None, alpha, None, stage))


def test_a_single_scale_refiner_s_dial_scales_both_phases_and_warns_once(single_sd15, comfy_nodes, caplog):
    import logging

    patcher, bundle = single_sd15
    trained = bundle.trained_guidance
    entry = tiny_models.TextClip().encode_from_tokens_scheduled("a b")[0]
    w = 1 + (trained - 1) / 2  # half the trained guidance's distance from 1: strength x 0.5, exactly
    with caplog.at_level(logging.WARNING, logger="ComfyUI-DICE"):
        out = comfy_nodes["DiceRefineConditioning"].execute([entry], bundle, 1.0, guidance_scale=w, late_strength=2.0,
                                                            late_from=0.3).args[0]
    assert [torch.equal(t, bundle.refine(entry[0], None, a)) for (t, _), a in zip(out, (0.5, 1.0))] == [True, True]
    assert caplog.text.count("trained for one guidance scale") == 1


@pytest.mark.parametrize("steps", [7, 12])
def test_ksampler_at_cfg_1_makes_one_pass_per_step_with_the_phase_of_that_sigma(single_sd15, comfy_nodes, steps):
    patcher, bundle = single_sd15
    entry = tiny_models.TextClip().encode_from_tokens_scheduled("a b")[0]
    refined = comfy_nodes["DiceRefineConditioning"].execute([entry], bundle, 1.0, model=patcher, late_strength=2.0,
                                                            late_from=0.4).args[0]
    switch_sigma = _sigmas_at(patcher, entry, [0.4])
    phases = []
    for sigma, tensor in _record_ksampler_at_cfg_1(patcher, refined, entry, torch.zeros(1, 4, 8, 8), steps):
        phase = int(stage_of_sigma(torch.tensor([sigma]), switch_sigma)[0])  # the same rule as the stages'
        phases.append(phase)
        assert torch.equal(tensor.to(refined[phase][0]), refined[phase][0]), (sigma, phase)
    assert phases == sorted(phases) and set(phases) == {0, 1}
