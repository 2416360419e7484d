"""models/dice follows ComfyUI's convention for model folders: the default folder is always there, and
paths from extra_model_paths.yaml are added to it (read by ComfyUI's own yaml loader)."""

import asyncio
import importlib.util
import os
import sys
import textwrap

from dice_core.fileformat import RefinerBundle, save_refiner
from dice_core.refiner import Refiner
from dice_testkit import harness


def _refiner(path):
    save_refiner(str(path), RefinerBundle(module=Refiner(64), family="SD15", keep_rule="clip_chunk_start"))


def _comfy_yaml_loader():
    """ComfyUI's own loader, utils/extra_config.py, by path: the name `utils` is ambiguous once ComfyUI is
    importable (comfy/utils.py)."""
    spec = importlib.util.spec_from_file_location("comfyui_extra_config",
                                                  os.path.join(harness.comfyui_path(), "utils", "extra_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_extra_path_config


def test_extra_model_paths_yaml_adds_to_models_dice(comfy_nodes, comfy_dirs):
    import folder_paths

    load_extra_path_config = _comfy_yaml_loader()
    default = comfy_dirs / "models" / "dice"
    shared = comfy_dirs / "shared_models"
    (shared / "refiners").mkdir(parents=True)
    yaml = comfy_dirs / "extra_model_paths.yaml"
    yaml.write_text(textwrap.dedent(f"""\
        team:
            base_path: {shared}
            dice: refiners/
        """))
    # ComfyUI applies the yaml at start-up, before it loads custom nodes: "dice" is not registered yet.
    folder_paths.folder_names_and_paths.pop("dice", None)
    load_extra_path_config(str(yaml))
    assert folder_paths.get_folder_paths("dice") == [str(shared / "refiners")]

    _refiner(default / "mine.safetensors")
    _refiner(shared / "refiners" / "team.safetensors")
    _start_up(comfy_nodes)  # registers the folder, as the server does when it loads the pack
    assert folder_paths.get_folder_paths("dice") == [str(default), str(shared / "refiners")]
    schema = comfy_nodes["DiceLoadRefiner"].define_schema()
    assert schema.inputs[0].options == ["mine.safetensors", "team.safetensors"]
    loaded = comfy_nodes["DiceLoadRefiner"].execute("team.safetensors").args[0]
    assert loaded.family == "SD15"

    # Saves go to models/dice, and registering again adds nothing twice.
    comfy_nodes["DiceSaveRefiner"].execute(loaded, "again")
    assert (default / "again_00001.safetensors").is_file()
    _start_up(comfy_nodes)
    assert folder_paths.get_folder_paths("dice") == [str(default), str(shared / "refiners")]
    assert folder_paths.folder_names_and_paths["dice"][1] == {".safetensors"}


def test_without_a_yaml_models_dice_is_created(comfy_nodes, comfy_dirs):
    import folder_paths

    folder_paths.folder_names_and_paths.pop("dice", None)
    (comfy_dirs / "models" / "dice").rmdir()
    _start_up(comfy_nodes)
    assert folder_paths.get_folder_paths("dice") == [str(comfy_dirs / "models" / "dice")]
    assert (comfy_dirs / "models" / "dice").is_dir()


def test_listing_refiners_changes_no_folder(comfy_nodes, comfy_dirs):
    """define_schema runs on every /object_info request: it lists models/dice and creates or registers nothing."""
    import folder_paths

    folder_paths.folder_names_and_paths.pop("dice", None)
    (comfy_dirs / "models" / "dice").rmdir()
    assert comfy_nodes["DiceLoadRefiner"].define_schema().inputs[0].options == []
    assert "dice" not in folder_paths.folder_names_and_paths
    assert not (comfy_dirs / "models" / "dice").exists()


def _start_up(comfy_nodes) -> None:
    """What the server does once when it loads the pack: the extension's get_node_list (nodes/__init__.py)."""
    package = sys.modules[sys.modules[comfy_nodes["DiceLoadRefiner"].__module__].__package__]
    extension = asyncio.run(package.comfy_entrypoint())
    asyncio.run(extension.get_node_list())
