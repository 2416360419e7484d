"""End to end on a real ComfyUI server (main.py --cpu) with the pack installed by copying it into a
fresh custom_nodes/ folder: node registration over HTTP, then the example workflows (their API
twins in workflows/api/, which test_browser.py proves equal to the frontend's conversion of the UI
files) run with a tiny seeded SD1.5 checkpoint.

    .venv/bin/python -m pytest -m e2e tests/test_e2e_server.py
"""

from __future__ import annotations

import copy
import os

import pytest
from PIL import Image

from dice_testkit import comfy_server, harness
from dice_testkit.server_fixtures import (
    TEST_OVERRIDES,
    WORKFLOW_NAMES,
    load_api_workflow,
    load_ui_workflow,
    output_files,
    with_overrides,
)

pytestmark = pytest.mark.e2e

DICE_NODES = {
    # node id: (display name, required inputs, optional inputs, output types)
    "DiceLoadRefiner": ("DICE Load Refiner", ["refiner_name"], [], ["DICE_REFINER"]),
    "DiceSaveRefiner": ("DICE Save Refiner", ["refiner", "filename_prefix", "keep_optimizer_state"], [], []),
    "DiceRefineConditioning": ("DICE Refine Conditioning", ["positive", "refiner", "strength"],
                               ["negative", "model", "guidance_scale", "late_strength", "late_from"],
                               ["CONDITIONING"]),
    "DiceTrainRefiner": (
        "DICE Train Refiner",
        ["model", "prompts", "prompts_file", "steps", "batch_size", "guidance_scale", "recipe", "learning_rate", "loss",
         "seed", "width", "height", "samples_per_prompt", "teacher_steps", "save_every", "filename_prefix",
         "gradient_checkpointing", "autocast"],
        ["clip", "resume_from", "latents", "conditioning", "negative", "frames", "negative_prompts", "guidance_range_min",
         "guidance_range_max", "timestep_stages"],
        ["DICE_REFINER", "IMAGE", "IMAGE"],
    ),
    "DiceToyWorldLoader": ("DICE Toy World Loader (demo model)", [], [], ["MODEL", "CLIP", "VAE"]),
}


def test_object_info_lists_every_dice_node_with_its_inputs(comfy_server_proc):
    info = comfy_server_proc.get("/object_info")
    for node_id, (display, required, optional, outputs) in DICE_NODES.items():
        assert node_id in info, f"{node_id} not registered; server log:\n{comfy_server_proc.log_tail()}"
        d = info[node_id]
        assert d["display_name"] == display
        assert d["category"] == harness.DICE_CATEGORIES[node_id]
        assert d["python_module"] == f"custom_nodes.{comfy_server.PACK_DIR_NAME}"
        assert d["description"]
        assert list(d["input"]["required"]) == required
        assert list(d["input"].get("optional", {})) == optional
        assert d["output"] == outputs
        for section in ("required", "optional"):
            for name, spec in d["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert info["DiceSaveRefiner"]["output_node"] is True
    # The refiner list is the server's models/dice, .safetensors only.
    assert all(n.endswith(".safetensors") for n in combo_options(info["DiceLoadRefiner"], "refiner_name"))


def combo_options(node_info: dict, name: str) -> list:
    """A combo's choices in either object_info layout: V1 [[...], {...}] or V3 ["COMBO", {"options": [...]}]."""
    spec = {**node_info["input"]["required"], **node_info["input"].get("optional", {})}[name]
    return spec[1]["options"] if spec[0] == "COMBO" else spec[0]


def test_installed_copy_has_no_test_files_and_a_dice_model_folder(comfy_server_proc):
    pack = comfy_server_proc.path("custom_nodes", comfy_server.PACK_DIR_NAME)
    assert os.path.isfile(os.path.join(pack, "__init__.py"))
    assert os.path.isfile(os.path.join(pack, "LICENSE"))
    assert not os.path.exists(os.path.join(pack, "tests")), ".comfyignore should keep tests/ out of the package"
    assert os.path.isdir(os.path.join(pack, "workflows"))
    assert os.path.isdir(comfy_server_proc.path("models", "dice"))
    assert "IMPORT FAILED" not in "\n".join(
        line for line in comfy_server_proc.log_text().splitlines() if comfy_server.PACK_DIR_NAME in line)


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_api_twin_has_every_executable_ui_node_and_link(name):
    """Structural check without a browser; test_browser.py checks exact equality with the frontend's conversion."""
    ui, api = load_ui_workflow(name), load_api_workflow(name)
    executable = {str(n["id"]): n for n in ui["nodes"] if n["type"] not in ("Note", "MarkdownNote")}
    assert set(executable) == set(api)
    notes = [n for n in ui["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert notes and all(len(n["widgets_values"][0]) > 200 for n in notes), "every workflow explains itself in a note"
    for link_id, src, src_slot, dst, dst_slot, type_ in ui["links"]:
        dst_node = executable[str(dst)]
        input_name = dst_node["inputs"][dst_slot]["name"]
        assert api[str(dst)]["inputs"][input_name] == [str(src), src_slot], (link_id, type_)
        assert api[str(dst)]["class_type"] == dst_node["type"]


def test_train_workflow_writes_a_refiner_to_models_dice(comfy_server_proc, trained_refiner):
    from dice_core.fileformat import load_refiner

    assert trained_refiner["name"] in trained_refiner["new_files"], trained_refiner["new_files"]
    bundle = load_refiner(comfy_server_proc.path("models", "dice", trained_refiner["name"]))
    assert bundle.family == "SD15" and bundle.embed_dim == 768
    assert bundle.train_step == TEST_OVERRIDES["DiceTrainRefiner"]["steps"]
    assert len(bundle.loss_history) == bundle.train_step
    outputs = trained_refiner["history"]["outputs"]
    assert any("saved models/dice/dice_refiner_00001.safetensors" in t for o in outputs.values() for t in o.get("text", []))
    previews = output_files(trained_refiner["history"], "temp")
    assert len(previews) == 3, "the workflow's loss curve and sharpening pattern previews, and the train node's own"
    train_id = next(k for k, n in load_api_workflow("dice_train").items() if n["class_type"] == "DiceTrainRefiner")
    assert [img["type"] for img in outputs[train_id]["images"]] == ["temp"], "the loss plot previews on the train node"
    # The refiner now shows up in DICE Load Refiner's list.
    info = comfy_server_proc.get("/object_info/DiceLoadRefiner")
    assert trained_refiner["name"] in combo_options(info["DiceLoadRefiner"], "refiner_name")


def _run_and_check_image(server, name: str, size: tuple[int, int], overrides: dict | None = None) -> str:
    api = with_overrides(load_api_workflow(name), overrides or TEST_OVERRIDES)
    entry = server.run(api, timeout=120)
    images = output_files(entry)
    assert len(images) == 1, entry.get("outputs")
    img = images[0]
    path = server.path("output", img["subfolder"], img["filename"])
    assert os.path.isfile(path) and path.endswith(".png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size
    return path


def test_apply_workflow_saves_a_png(comfy_server_proc, trained_refiner):
    path = _run_and_check_image(comfy_server_proc, "dice_apply", (64, 64))
    assert os.path.basename(os.path.dirname(path)) == "DICE"


def test_negative_prompt_workflow_saves_a_png(comfy_server_proc, trained_refiner):
    _run_and_check_image(comfy_server_proc, "dice_negative_prompt", (64, 64))


def test_dial_workflow_saves_a_png(comfy_server_proc, trained_refiner):
    """The dial template at guidance_scale 7 on the single-scale refiner the train template made: it runs (with the
    console's warning that only a dial refiner follows the dial)."""
    api = load_api_workflow("dice_dial")
    assert [n["inputs"]["guidance_scale"] for n in api.values() if n["class_type"] == "DiceRefineConditioning"] == [7.0]
    _run_and_check_image(comfy_server_proc, "dice_dial", (64, 64))


def test_compare_workflow_saves_both_images_side_by_side(comfy_server_proc, trained_refiner):
    spacing = load_api_workflow("dice_compare")
    spacing = next(n["inputs"]["spacing_width"] for n in spacing.values() if n["class_type"] == "ImageStitch")
    _run_and_check_image(comfy_server_proc, "dice_compare", (64 * 2 + spacing, 64))


@pytest.mark.parametrize("name", ["dice_toyworld", "dice_lora"])
def test_toyworld_workflows_need_no_model_file_and_save_three_panels(comfy_server_proc, name):
    """The templates that run as shipped: they train on the bundled toy model (dice_lora: with the pack's toy LoRA
    stacked by ComfyUI's LoraLoaderModelOnly), so no checkpoint or refiner file."""
    server = comfy_server_proc
    api = load_api_workflow(name)
    assert not [n for n in api.values() if n["class_type"] in ("CheckpointLoaderSimple", "DiceLoadRefiner")]
    loras = [n for n in api.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert len(loras) == (name == "dice_lora")
    spacing = {n["inputs"]["spacing_width"] for n in api.values() if n["class_type"] == "ImageStitch"}
    assert len(spacing) == 1
    overrides = {**TEST_OVERRIDES, "EmptyLatentImage": {**TEST_OVERRIDES["EmptyLatentImage"], "batch_size": 1}}
    mark = len(server.log_text())
    _run_and_check_image(server, name, (64 * 3 + 2 * spacing.pop(), 64), overrides)
    # The refiner was trained on the very MODEL it refines for, LoRA included: the model check stays silent.
    assert "DICE: this refiner was trained" not in server.log_text()[mark:]


def test_fast_path_check_warns_in_the_console_only_when_the_fast_path_is_off(comfy_server_proc, trained_refiner):
    """DICE Fast-Path Check after the checkpoint loader: with Self-Attention Guidance (which disables ComfyUI's
    cfg=1 optimization) the server console must say that DICE's speed-up is cancelled; without it, nothing."""
    server = comfy_server_proc
    marker = "cancels DICE's speed-up"
    base = with_overrides(load_api_workflow("dice_apply"), TEST_OVERRIDES)
    ks = next(k for k, n in base.items() if n["class_type"] == "KSampler")
    base["9000"] = {"class_type": "DiceFastPathCheck", "inputs": {"model": base[ks]["inputs"]["model"]}}
    base[ks]["inputs"]["model"] = ["9000", 0]

    mark = len(server.log_text())
    base[ks]["inputs"]["seed"] = 1001
    server.run(base)
    assert marker not in server.log_text()[mark:]

    sag = copy.deepcopy(base)
    sag["9001"] = {"class_type": "SelfAttentionGuidance", "inputs": {"model": ["9000", 0], "scale": 0.5, "blur_sigma": 2.0}}
    sag[ks]["inputs"]["model"] = ["9001", 0]
    mark = len(server.log_text())
    server.run(sag)
    tail = server.log_text()[mark:]
    assert tail.count(marker) == 1, tail[-3000:]
