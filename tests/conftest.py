"""The one place the suite is set up. The repo root is importable through pyproject.toml's
`[tool.pytest.ini_options] pythonpath`; ComfyUI is put first by harness.setup_comfy, before any test module
imports `nodes` (ComfyUI's nodes.py, not this pack's nodes/)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from dice_testkit import harness  # noqa: E402

torch.set_num_threads(1)
harness.setup_comfy()


def pytest_report_header(config):
    """Which ComfyUI this run tests: the suite runs on 0.3.75 and on 0.33 (scripts/run_tests.sh)."""
    return f"ComfyUI {harness.comfyui_version()} at {harness.comfyui_path()}"


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's NODE_CLASS_MAPPINGS with this pack loaded through nodes.load_custom_node."""
    return harness.load_pack()


@pytest.fixture()
def comfy_dirs(tmp_path, comfy_nodes):
    """Point ComfyUI's models/, output/ and input/ at a temp folder for one test."""
    import folder_paths

    saved = (folder_paths.models_dir, dict(folder_paths.folder_names_and_paths), folder_paths.get_output_directory(),
             folder_paths.get_input_directory())
    folder_paths.models_dir = str(tmp_path / "models")
    folder_paths.folder_names_and_paths.pop("dice", None)
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_input_directory(str(tmp_path / "input"))
    os.makedirs(tmp_path / "input", exist_ok=True)
    dice = tmp_path / "models" / "dice"
    dice.mkdir(parents=True)
    folder_paths.folder_names_and_paths["dice"] = ([str(dice)], {".safetensors"})
    yield tmp_path
    folder_paths.models_dir = saved[0]
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(saved[1])
    folder_paths.set_output_directory(saved[2])
    folder_paths.set_input_directory(saved[3])


# Real-server fixtures for the e2e and browser tests (tiny checkpoint, ComfyUI server, trained refiner).
from dice_testkit.server_fixtures import comfy_server_proc, tiny_checkpoint, trained_refiner  # noqa: E402,F401
