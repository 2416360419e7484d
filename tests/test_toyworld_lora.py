"""The toy style LoRA (toyworld/train_lora.py, shipped as toyworld/weights/loras/dice-toyworld/pastel_style.safetensors):
the analyser reads its style exactly, ComfyUI's own LoRA loader applies it, and it changes the style and not the
guidance. It is what benchmarks/transfer_study.py stacks on the toy base model."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from dice_testkit import tolerances
from toyworld import world

PASTEL = world.STYLES["pastel"]


def _all_combos(repeat=2):
    return world.combo_from_index(torch.arange(world.N_COMBOS).repeat(repeat))


def test_analyser_reads_pastel_renders_exactly_and_pastel_level_measures_the_style():
    g = torch.Generator().manual_seed(0)
    ci, si, pi = _all_combos(2)
    plain = world.render(ci, si, pi, torch.Generator().manual_seed(1))
    pastel = world.render(ci, si, pi, torch.Generator().manual_seed(1), style="pastel")
    assert not torch.equal(plain, pastel)
    for std in (0.0, 0.1, 0.2):
        noisy = pastel + std * torch.randn(pastel.shape, generator=g)
        assert world.score(noisy, ci, si, pi)["all"] == 1.0, std
    assert torch.equal(world.pastel_level(plain), torch.zeros(len(ci)))  # one or two channels exactly 0
    # Pastel pixels are (lift + (1 - lift) * palette) * brightness * coverage, through [-1, 1] and back: about six
    # float32 roundings of values <= 1, and the ratio's denominator is above 0.7.
    assert torch.allclose(world.pastel_level(pastel), torch.full((len(ci),), PASTEL), rtol=0,
                          atol=8 * tolerances.UNIT_ROUNDOFF / 0.7)


def test_plain_renders_did_not_change_with_the_style_argument():
    """The base model was trained on renders made before styles existed: lift 0 must be the same image, bit for bit."""
    ci, si, pi = _all_combos(1)
    img = world.render(ci, si, pi, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    n = len(ci)
    anchor = world.ANCHORS[pi]
    cx = anchor[:, 0] + (torch.rand(n, generator=g) - 0.5)
    cy = anchor[:, 1] + (torch.rand(n, generator=g) - 0.5)
    r = 3.0 + 0.8 * torch.rand(n, generator=g)
    bright = 0.8 + 0.2 * torch.rand(n, generator=g)
    before = world._coverage(si, cx, cy, r)[:, None] * (world.PALETTE[ci] * bright[:, None])[:, :, None, None] * 2 - 1
    assert torch.equal(img, before)


def test_new_adapters_are_exactly_the_base_model():
    from toyworld.train_lora import LowRankAdapters, lora_targets

    layers = {"a.transformer_blocks.0.attn1.to_q": torch.nn.Linear(8, 8), "b.transformer_blocks.0.ff.net.2": torch.nn.Linear(16, 8)}
    model = torch.nn.ModuleDict({"x": torch.nn.Linear(4, 4)})
    assert lora_targets(model) == {}
    adapters = LowRankAdapters(layers, rank=2, alpha=2.0, generator=torch.Generator().manual_seed(0))
    patched = adapters.patched_weights(layers)
    assert all(torch.equal(patched[f"{k}.weight"], m.weight) for k, m in layers.items())
    sd = adapters.comfy_state_dict()
    assert set(sd) == {f"diffusion_model.{k}.{part}" for k in layers for part in ("lora_up.weight", "lora_down.weight", "alpha")}


@pytest.fixture(scope="module")
def toy(comfy_nodes):
    from toyworld.comfy_objects import load_toy_world

    return load_toy_world()


def test_the_pack_lists_the_toy_lora_for_comfyuis_lora_loaders(comfy_nodes):
    import folder_paths

    from toyworld.comfy_objects import LORA_NAME

    assert LORA_NAME in folder_paths.get_filename_list("loras")
    assert folder_paths.get_full_path("loras", LORA_NAME).endswith("pastel_style.safetensors")


def test_shipped_lora_metadata_was_written_by_its_script():
    from toyworld.comfy_objects import LORA_PATH, UNET_PATH, read_metadata

    meta = read_metadata(LORA_PATH)
    assert meta["command"].startswith("python -m toyworld.train_lora ")
    with open(UNET_PATH, "rb") as f:
        assert meta["base_unet_sha256"] == hashlib.sha256(f.read()).hexdigest(), "trained on another base model"
    evaluation = json.loads(meta["evaluation"])
    assert evaluation["lora_cfg5"]["pastel_level"] > 0.25 > evaluation["base_cfg5"]["pastel_level"]


def test_comfyuis_lora_loader_applies_every_adapter_as_trained(comfy_nodes, toy):
    """LoraLoaderModelOnly on the toy MODEL: one patch per trained layer, and once loaded each weight is
    W + (alpha / rank) * up @ down, within float32 rounding of that sum."""
    import comfy.model_management
    import comfy.utils

    import nodes
    from toyworld.comfy_objects import LORA_NAME, LORA_PATH

    model = toy[0]
    base = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}
    lora = comfy.utils.load_torch_file(LORA_PATH)
    (stacked,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, LORA_NAME, 1.0)
    layers = sorted(k[len("diffusion_model."):-len(".lora_up.weight")] for k in lora if k.endswith(".lora_up.weight"))
    assert len(layers) == 70 and {f"diffusion_model.{k}.weight" for k in layers} == set(stacked.patches)
    assert not model.patches, "the input MODEL must stay unpatched"
    comfy.model_management.load_models_gpu([stacked])
    try:
        patched = stacked.model.diffusion_model.state_dict()
        for name in layers:
            up, down = lora[f"diffusion_model.{name}.lora_up.weight"], lora[f"diffusion_model.{name}.lora_down.weight"]
            scale = float(lora[f"diffusion_model.{name}.alpha"]) / up.shape[1]
            w = base[f"{name}.weight"]
            want = w.double() + scale * (up.double() @ down.double())
            bound = tolerances.summation_error(up.shape[1] + 1) * (w.double().abs() + scale * (up.double().abs() @ down.double().abs()))
            assert ((patched[f"{name}.weight"].double() - want).abs() <= bound + 1e-12).all(), name
    finally:
        comfy.model_management.unload_all_models()
    after = model.model.diffusion_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items()), "unloading must restore the base weights"


def test_lora_changes_the_style_and_keeps_cfgs_effect(comfy_nodes, toy):
    """Measured at full size (10 seeds, in the file's metadata): pastel level 0.33 with the LoRA against 0.03 without,
    cfg 5 accuracy 0.89 on both. Here 18 prompts x 2 seeds; the thresholds sit halfway, far outside the noise of 36
    images."""
    import nodes
    from toyworld.comfy_objects import LORA_NAME
    from toyworld.evaluate import sample_and_score

    model, clip, _ = toy
    (stacked,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, LORA_NAME, 1.0)
    levels = {}
    for label, m in (("base", model), ("lora", stacked)):
        with torch.inference_mode():
            r = sample_and_score(m, clip, world.HELD_OUT_CAPTIONS, [0, 1], 5.0)
        levels[label] = float(world.pastel_level(world.latent_to_rgb(r["latents"])).nanmean())
        assert r["all"] > 0.6, (label, r["all"])
    assert levels["lora"] > 0.2 > levels["base"], levels


def test_fingerprint_names_the_lora_and_ignores_whether_it_is_loaded(comfy_nodes, toy):
    import comfy.model_management

    import nodes
    from dice_comfy.bridge import PATCHES_MARK, model_fingerprint
    from toyworld.comfy_objects import LORA_NAME

    base = toy[0]
    plain = model_fingerprint(base)
    assert PATCHES_MARK not in plain
    (stacked,) = nodes.LoraLoaderModelOnly().load_lora_model_only(base, LORA_NAME, 1.0)
    (again,) = nodes.LoraLoaderModelOnly().load_lora_model_only(base, LORA_NAME, 1.0)
    (half,) = nodes.LoraLoaderModelOnly().load_lora_model_only(base, LORA_NAME, 0.5)
    with_lora = model_fingerprint(stacked)
    assert with_lora.split(PATCHES_MARK)[0] == plain, "the checkpoint's part stays the checkpoint's"
    assert model_fingerprint(again) == with_lora and model_fingerprint(half) not in (with_lora, plain)
    comfy.model_management.load_models_gpu([stacked])  # the LoRA now sits in the shared weights
    try:
        assert model_fingerprint(base) == plain and model_fingerprint(stacked) == with_lora
    finally:
        comfy.model_management.unload_all_models()


def test_refine_warns_when_the_model_has_other_loras_or_is_another_checkpoint(comfy_nodes, toy, caplog):
    """DICE Refine Conditioning with the MODEL connected: silent on the model the refiner was trained for, the LoRA
    warning on the same checkpoint with a LoRA added, the checkpoint warning on another model of the family."""
    import nodes
    from dice_comfy.bridge import model_fingerprint
    from dice_comfy.conditioning import OTHER_LORAS_WARNING, refine_conditioning
    from dice_core.fileformat import RefinerBundle
    from dice_core.refiner import Refiner
    from toyworld import comfy_objects
    from toyworld.comfy_objects import LORA_NAME

    model, clip, _ = toy
    (stacked,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, LORA_NAME, 1.0)
    other = comfy_objects.wrap_model_patcher(comfy_objects.build_base_model())
    comfy_objects.init_unet_weights(other.model.diffusion_model, seed=7)
    cond = nodes.CLIPTextEncode().encode(clip, "a red square on the left")[0]
    uc = nodes.CLIPTextEncode().encode(clip, "")[0][0][0]
    refiner = RefinerBundle(module=Refiner(64), family="SD15", null_uc=uc.clone(),
                            base_model_hash=model_fingerprint(model))

    def warnings_for(connected) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="ComfyUI-DICE"):
            refine_conditioning(refiner, cond, model=connected)
        return [r.getMessage() for r in caplog.records]

    assert warnings_for(model) == [] and warnings_for(None) == []
    assert warnings_for(stacked) == [OTHER_LORAS_WARNING]
    (other_warning,) = warnings_for(other)
    assert "different checkpoint" in other_warning and refiner.base_model_hash in other_warning
    refiner.base_model_hash = model_fingerprint(stacked)  # trained with the LoRA: silent there, warns without it
    assert warnings_for(stacked) == [] and warnings_for(model) == [OTHER_LORAS_WARNING]
    refiner.base_model_hash = None  # an official pickle records none: nothing to compare
    assert warnings_for(other) == []
