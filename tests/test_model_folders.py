"""models/dice follows ComfyUI's convention for model folders: the default folder is always there, and
paths from extra_model_paths.yaml are added to it (read by ComfyUI's own yaml loader)."""

import importlib.util
import os
import textwrap

import harness

from dice_core.fileformat import RefinerBundle, save_refiner
from dice_core.refiner import Refiner


def _refiner(path):
    save_refiner(str(path), RefinerBundle(module=Refiner(64), family="SD15", keep_rule="clip_chunk_start"))


def _comfy_yaml_loader():
    """ComfyUI's own loader, utils/extra_config.py, by path: the name `utils` is ambiguous once ComfyUI has
    put comfy/ on sys.path (comfy/utils.py)."""
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
    schema = comfy_nodes["DiceLoadRefiner"].define_schema()  # registers the folder, as the server does
    assert folder_paths.get_folder_paths("dice") == [str(default), str(shared / "refiners")]
    assert schema.inputs[0].options == ["mine.safetensors", "team.safetensors"]
    loaded = comfy_nodes["DiceLoadRefiner"].execute("team.safetensors").args[0]
    assert loaded.family == "SD15"

    # Saves go to models/dice, and registering again adds nothing twice.
    comfy_nodes["DiceSaveRefiner"].execute(loaded, "again")
    assert (default / "again_00001.safetensors").is_file()
    comfy_nodes["DiceLoadRefiner"].define_schema()
    assert folder_paths.get_folder_paths("dice") == [str(default), str(shared / "refiners")]
    assert folder_paths.folder_names_and_paths["dice"][1] == {".safetensors"}


def test_without_a_yaml_models_dice_is_created(comfy_nodes, comfy_dirs):
    import folder_paths

    folder_paths.folder_names_and_paths.pop("dice", None)
    (comfy_dirs / "models" / "dice").rmdir()
    comfy_nodes["DiceLoadRefiner"].define_schema()
    assert folder_paths.get_folder_paths("dice") == [str(comfy_dirs / "models" / "dice")]
    assert (comfy_dirs / "models" / "dice").is_dir()
