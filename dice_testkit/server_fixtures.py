"""Session fixtures for the e2e and browser tests: the tiny checkpoint, one real ComfyUI server with
this pack installed, and one refiner trained through that server. Imported by conftest.py."""

from __future__ import annotations

import copy
import json
import os

import pytest

from dice_testkit import comfy_server, harness

WORKFLOWS = os.path.join(harness.REPO, "workflows")
WORKFLOW_NAMES = ["dice_train", "dice_apply", "dice_compare", "dice_negative_prompt", "dice_dial", "dice_toyworld",
                  "dice_lora", "dice_video_wan21"]

# Small enough for 2 CPU cores; everything else is the workflow's own user default.
TEST_OVERRIDES = {
    "CheckpointLoaderSimple": {"ckpt_name": comfy_server.TINY_CKPT_NAME},
    "DiceTrainRefiner": {"steps": 3, "batch_size": 4, "width": 64, "height": 64, "samples_per_prompt": 1,
                         "teacher_steps": 2, "save_every": 0},
    "EmptyLatentImage": {"width": 64, "height": 64},
    "KSampler": {"steps": 3},
}


def load_ui_workflow(name: str) -> dict:
    with open(os.path.join(WORKFLOWS, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def load_api_workflow(name: str) -> dict:
    with open(os.path.join(WORKFLOWS, "api", f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def with_overrides(api: dict, overrides: dict | None = None) -> dict:
    """A copy of an API-format workflow with inputs replaced per class_type (only inputs it already has)."""
    api = copy.deepcopy(api)
    for node in api.values():
        for key, value in (overrides or {}).get(node["class_type"], {}).items():
            assert key in node["inputs"], f"{node['class_type']} has no input {key}"
            node["inputs"][key] = value
    return api


def output_files(entry: dict, kind: str = "output") -> list[dict]:
    """The images a finished prompt's /history entry lists, of one type (output or temp)."""
    found = []
    for out in entry.get("outputs", {}).values():
        for img in out.get("images", []):
            if img.get("type") == kind:
                found.append(img)
    return found


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """The seeded tiny SD1.5 checkpoint, written once per session (or reused from $DICE_TINY_CKPT)."""
    from dice_testkit import make_tiny_checkpoint

    harness.setup_comfy()
    path = os.environ.get("DICE_TINY_CKPT") or str(tmp_path_factory.mktemp("ckpt") / comfy_server.TINY_CKPT_NAME)
    return make_tiny_checkpoint.ensure_tiny_checkpoint(path)


@pytest.fixture(scope="session")
def comfy_server_proc(tmp_path_factory, tiny_checkpoint):
    """`python main.py --cpu` on a free port with the pack copied into a fresh custom_nodes/; killed at the end."""
    server = comfy_server.ComfyServer(str(tmp_path_factory.mktemp("comfy_base")), checkpoint=tiny_checkpoint)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def trained_refiner(comfy_server_proc) -> dict:
    """Runs workflows/api/dice_train.json (tiny overrides) on the server once; returns its file and history."""
    server = comfy_server_proc
    before = set(os.listdir(server.path("models", "dice")))
    entry = server.run(with_overrides(load_api_workflow("dice_train"), TEST_OVERRIDES), timeout=240)
    new = sorted(set(os.listdir(server.path("models", "dice"))) - before)
    return {"history": entry, "new_files": new, "name": "dice_refiner_00001.safetensors"}
