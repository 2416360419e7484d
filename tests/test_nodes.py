"""The pack loaded by ComfyUI's own loader; nodes called directly on tiny real models."""

import os

import pytest
import torch

from dice_core.fileformat import RefinerBundle, RefinerFileError, save_refiner
from dice_core.refiner import Refiner
from dice_testkit import harness, tiny_models


def _bundle(dim, family, seed=0):
    torch.manual_seed(seed)
    return RefinerBundle(module=Refiner(dim), family=family, keep_rule="clip_chunk_start", null_uc=torch.randn(1, 77, dim))


def test_every_node_is_registered_with_tooltips(comfy_nodes):
    for name in sorted(harness.DICE_NODES):
        assert name in comfy_nodes, name
        info = comfy_nodes[name].GET_SCHEMA() if hasattr(comfy_nodes[name], "GET_SCHEMA") else None
        schema = comfy_nodes[name].define_schema()
        assert schema.description, f"{name} has no description"
        for inp in schema.inputs:
            assert inp.tooltip, f"{name}.{inp.id} has no tooltip"
        del info


def test_every_node_has_its_category_and_search_aliases_where_the_schema_takes_them(comfy_nodes):
    import dataclasses

    from comfy_api.v0_0_2 import io

    takes_aliases = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}
    # The pack detects the field; pin what each supported runtime has, so that detection cannot drop them silently.
    assert takes_aliases == {"0.3.75": False, "0.33.0": True}.get(harness.comfyui_version(), takes_aliases)
    assert set(harness.DICE_CATEGORIES) == harness.DICE_NODES
    for name, category in harness.DICE_CATEGORIES.items():
        schema = comfy_nodes[name].define_schema()
        info = comfy_nodes[name].GET_NODE_INFO_V1()  # what /object_info sends the frontend
        assert schema.category == info["category"] == category, name
        if not takes_aliases:
            assert not info.get("search_aliases"), name
            continue
        aliases = schema.search_aliases
        assert info["search_aliases"] == aliases and aliases, f"{name} has no search aliases"
        assert all(a == a.lower().strip() and a for a in aliases), aliases  # lower case, as core writes them
        assert len(set(aliases)) == len(aliases), aliases
    if takes_aliases:
        assert "cfg distillation" in comfy_nodes["DiceTrainRefiner"].define_schema().search_aliases


def test_load_node_lists_only_safetensors_and_loads(comfy_nodes, comfy_dirs):
    dice_dir = comfy_dirs / "models" / "dice"
    save_refiner(str(dice_dir / "mine.safetensors"), _bundle(768, "SD15"))
    (dice_dir / "notes.txt").write_text("x")
    (dice_dir / "old.ckpt").write_bytes(b"x")
    import folder_paths

    assert folder_paths.get_filename_list("dice") == ["mine.safetensors"]
    loader = comfy_nodes["DiceLoadRefiner"]
    options = loader.define_schema().inputs[0].options
    assert options == ["mine.safetensors"]
    out = loader.execute("mine.safetensors")
    assert isinstance(out.args[0], RefinerBundle) and out.args[0].family == "SD15"


def test_save_node_writes_numbered_files_atomically(comfy_nodes, comfy_dirs):
    save = comfy_nodes["DiceSaveRefiner"]
    save.execute(_bundle(64, "SD15"), "sub/run")
    save.execute(_bundle(64, "SD15"), "sub/run")
    files = sorted(os.listdir(comfy_dirs / "models" / "dice" / "sub"))
    assert files == ["run_00001.safetensors", "run_00002.safetensors"]
    with pytest.raises(ValueError, match="outside models/dice"):
        save.execute(_bundle(64, "SD15"), "../../escape")


def test_refine_node_refines_every_entry_and_never_mutates(comfy_nodes):
    node = comfy_nodes["DiceRefineConditioning"]
    b = _bundle(2048, "SDXL")
    cond = tiny_models.clip_conditioning(1, 2048, pooled=1280) + tiny_models.clip_conditioning(2, 2048, tokens=154, pooled=1280)
    cond[0][1]["width"] = 1024
    originals = [(c.clone(), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in d.items()}) for c, d in cond]
    out = node.execute(cond, b, 1.0).args[0]
    assert len(out) == 2
    for (c, d), (oc, od), (rc, rd) in zip(cond, originals, out, strict=True):
        assert torch.equal(c, oc), "input tensor mutated"
        assert d.keys() == od.keys() and rd.keys() == od.keys()
        assert rd["pooled_output"] is d["pooled_output"], "pooled output must pass through untouched"
        assert rd is not d
        assert rc.shape == c.shape and not torch.equal(rc, c)
        assert torch.equal(rc[:, ::77], c[:, ::77])
    assert out[0][1]["width"] == 1024
    # strength 0 is the identity
    same = node.execute(cond, b, 0.0).args[0]
    assert torch.equal(same[0][0], cond[0][0])


def test_negative_conditioning_is_used_as_uc(comfy_nodes):
    node = comfy_nodes["DiceRefineConditioning"]
    b = _bundle(768, "SD15")
    pos = tiny_models.clip_conditioning(1, 768)
    neg = tiny_models.clip_conditioning(5, 768)
    with_null = node.execute(pos, b, 1.0).args[0][0][0]
    with_neg = node.execute(pos, b, 1.0, neg).args[0][0][0]
    assert not torch.equal(with_null, with_neg)
    torch.testing.assert_close(with_neg, b.refine(pos[0][0], neg[0][0]))


def test_refine_node_errors_are_clear(comfy_nodes):
    node = comfy_nodes["DiceRefineConditioning"]
    b = _bundle(768, "SD15")
    with pytest.raises(ValueError, match="trained for dim 768 \\(model family: SD15\\)"):
        node.execute(tiny_models.clip_conditioning(1, 2048), b, 1.0)
    with pytest.raises(ValueError, match="empty"):
        node.execute([], b, 1.0)
    with pytest.raises(ValueError, match="negative/null conditioning has embedding dim 1024"):
        node.execute(tiny_models.clip_conditioning(1, 768), b, 1.0, tiny_models.clip_conditioning(1, 1024))
    nan = tiny_models.clip_conditioning(1, 768)
    nan[0][0][0, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        node.execute(nan, b, 1.0)


def test_load_node_corrupt_file_is_an_error_not_a_crash(comfy_nodes, comfy_dirs):
    (comfy_dirs / "models" / "dice" / "broken.safetensors").write_bytes(b"\x12\x00\x00garbage")
    with pytest.raises(RefinerFileError, match="truncated or corrupt"):
        comfy_nodes["DiceLoadRefiner"].execute("broken.safetensors")


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_ksampler_at_cfg1_on_refined_conditioning_skips_the_uncond_pass(comfy_nodes, family):
    import nodes

    patcher = getattr(tiny_models, family)()
    dim, pooled = (768, None) if family == "sd15" else (2048, 1280)
    b = _bundle(dim, type(patcher.model.model_config).__name__)
    pos = tiny_models.clip_conditioning(1, dim, pooled=pooled)
    neg = tiny_models.clip_conditioning(2, dim, pooled=pooled)
    refined = comfy_nodes["DiceRefineConditioning"].execute(pos, b, 1.0).args[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}

    counts = {}
    for cfg, cond in ((5.0, pos), (1.0, refined)):
        counter = tiny_models.CallCounter()
        (out,) = nodes.common_ksampler(counter.attach(patcher), 7, 4, cfg, "euler", "normal", cond, neg, latent)
        assert torch.isfinite(out["samples"]).all()
        counts[cfg] = counter.batches
    # cfg 5: every call carries cond and uncond; cfg 1 on refined: the uncond pass is skipped.
    assert sum(counts[5.0]) == 2 * sum(counts[1.0])
    assert counts[1.0] == [1] * 4


def test_toy_world_loader_gives_a_real_model_clip_and_vae(comfy_nodes):
    import nodes

    model, clip, vae = comfy_nodes["DiceToyWorldLoader"].execute().args
    assert type(model.model.model_config).__name__ == "SD15"
    cond = nodes.CLIPTextEncode().encode(clip, "a red square on the left")[0]
    assert cond[0][0].shape == (1, 16, 64)
    (latent,) = nodes.common_ksampler(model, 0, 2, 1.0, "euler", "normal", cond, cond, {"samples": torch.zeros(1, 4, 16, 16)})
    image = vae.decode(latent["samples"])
    assert image.shape == (1, 128, 128, 3) and torch.isfinite(image).all()
