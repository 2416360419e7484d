"""What the Comfy registry and ComfyUI-Manager need from this repo, and a copy-install that loads.

    .venv/bin/python -m pytest tests/test_packaging.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse

import pytest

from dice_testkit import comfy_server, harness

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = harness.REPO
# https://semver.org/#is-there-a-suggested-regular-expression-regex-to-check-a-semver-string
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
NEVER_REQUIRE = {"torch", "torchvision", "torchaudio"}
# The accelerator classifiers the Registry recognises (docs.comfy.org/registry/specifications).
REGISTRY_ACCELERATORS = {"Environment :: GPU :: NVIDIA CUDA", "Environment :: GPU :: AMD ROCm", "Environment :: GPU :: Intel Arc",
                         "Environment :: NPU :: Huawei Ascend", "Environment :: GPU :: Apple Metal"}
# What `comfy node validate` and `comfy node publish` lint for (comfy-cli runs ruff with these rules): exec, eval,
# and several statements on one line.
REGISTRY_LINT_RULES = "S102,S307,E702"


def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _requirement_names(lines) -> list[str]:
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if m:
            names.append(re.sub(r"[-_.]+", "-", m.group(1)).lower())
    return names


def _comfyui_requirements() -> set[str]:
    path = os.path.join(harness.comfyui_path(), "requirements.txt")
    with open(path, encoding="utf-8") as f:
        return set(_requirement_names(f))


def test_project_metadata_for_the_registry():
    project = _pyproject()["project"]
    name = project["name"]
    assert "comfyui" not in name.lower(), f"the registry rejects node ids containing 'comfyui': {name}"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name), f"use a lowercase, dash-separated id: {name}"
    assert SEMVER.match(project["version"]), f"version must be semver: {project['version']}"
    assert len(project.get("description", "")) >= 20
    lic = project.get("license")
    assert lic, "[project] license is missing"
    if isinstance(lic, dict) and "file" in lic:
        assert os.path.isfile(os.path.join(REPO, lic["file"])), f"license file {lic['file']} is missing"
    for key in ("Repository", "Documentation", "Issues"):  # the URL keys comfy-cli reads
        url = project.get("urls", {}).get(key, "")
        assert url.startswith("https://"), f"[project.urls] {key} must be an https URL"
    # The Registry derives OS and accelerator support from the classifiers.
    classifiers = project.get("classifiers", [])
    assert any(c.startswith("Operating System ::") for c in classifiers), "name the supported OS"
    accelerators = [c for c in classifiers if c.startswith("Environment :: ")]
    assert accelerators and set(accelerators) <= REGISTRY_ACCELERATORS, accelerators


def test_tool_comfy_section():
    comfy = _pyproject()["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy.get("PublisherId", "")), "PublisherId: the registry publisher id"
    assert comfy.get("DisplayName", "").strip()
    icon = comfy.get("Icon", "")
    assert icon.startswith("https://") and re.search(r"\.(png|jpe?g|svg|gif|webp)$", icon), (
        f"[tool.comfy] Icon must be an image URL (the registry shows it; ~400x400 px), got {icon!r}")
    # An icon served from this repo's default branch must exist here, square.
    repo_url = _pyproject()["project"]["urls"]["Repository"].rstrip("/")
    raw = repo_url.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    if icon.startswith(raw):
        from PIL import Image

        local = os.path.join(REPO, icon[len(raw):])
        assert os.path.isfile(local), f"{icon} points at {local}, which is not in the repo"
        with Image.open(local) as im:
            assert im.size[0] == im.size[1] >= 128, im.size


def test_requires_comfyui_is_the_oldest_tested_runtime_and_this_one_meets_it():
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(_pyproject()["tool"]["comfy"]["requires-comfyui"])
    with open(os.path.join(REPO, "scripts", "setup_env.sh"), encoding="utf-8") as f:
        tested = sorted(set(re.findall(r"ComfyUI (\d+\.\d+\.\d+)", f.read())), key=lambda v: tuple(map(int, v.split("."))))
    assert tested and str(spec) == f">={tested[0]}", f"requires-comfyui should be the oldest tested runtime, {tested[0]}"
    assert harness.comfyui_version() in spec


def test_publish_workflow_uses_the_registry_action_and_is_not_published():
    path = os.path.join(REPO, ".github", "workflows", "publish.yml")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert re.search(r"uses:\s*Comfy-Org/publish-node-action@v\d", text)
    assert "secrets.REGISTRY_ACCESS_TOKEN" in text and "pyproject.toml" in text
    assert not any(f.startswith(".github/") for f in comfy_server.pack_files())


def _registry_lint(folder: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", ".", "--isolated", "--no-cache", "-q", "--select",
                           REGISTRY_LINT_RULES], cwd=folder, capture_output=True, text=True, timeout=120)


def test_registry_security_lint_passes_on_the_published_files(tmp_path):
    """comfy-cli's lint rules on exactly the files the Registry would publish; and the same lint, on a copy
    with one eval added, must fail, so a clean result means something."""
    pack = comfy_server.install_pack(str(tmp_path / "published"))
    result = _registry_lint(pack)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(pack, "dice_core", "refiner.py"), "a", encoding="utf-8") as f:
        f.write("\nVALUE = eval('1')\n")
    flagged = _registry_lint(pack)
    assert flagged.returncode != 0 and "S307" in flagged.stdout


def test_requirements_name_nothing_comfyui_ships_and_never_torch():
    with open(os.path.join(REPO, "requirements.txt"), encoding="utf-8") as f:
        names = _requirement_names(f)
    names += _requirement_names(_pyproject()["project"].get("dependencies", []))
    assert not NEVER_REQUIRE & set(names), "never require torch/torchvision/torchaudio: it replaces a user's CUDA build"
    shipped = _comfyui_requirements() | NEVER_REQUIRE
    assert not shipped & set(names), f"ComfyUI already installs {sorted(shipped & set(names))}"


def test_license_is_gpl3_compatible():
    with open(os.path.join(REPO, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    head = " ".join(text[:600].split())
    gpl3 = "GNU GENERAL PUBLIC LICENSE Version 3" in head
    agpl3 = "GNU AFFERO GENERAL PUBLIC LICENSE Version 3" in head
    permissive = any(s in head for s in ("MIT License", "Apache License Version 2.0", "BSD 3-Clause", "BSD 2-Clause"))
    assert gpl3 or agpl3 or permissive, "LICENSE must be GPL-3.0 or compatible with it (ComfyUI is GPL-3.0)"
    if gpl3:
        assert "TERMS AND CONDITIONS" in text and "END OF TERMS AND CONDITIONS" in text, "use the full GPL-3.0 text"


def test_comfyignore_keeps_the_runtime_and_drops_the_dev_files():
    files = comfy_server.pack_files()
    for needed in ("__init__.py", "LICENSE", "nodes/__init__.py", "dice_comfy/session.py", "dice_core/refiner.py",
                   "dice_cli/cli.py", "workflows/dice_apply.json", "web/js/dice_save_message.js"):
        assert needed in files, f"{needed} must be in the published package"
    assert any(f.startswith("toyworld/") for f in files)
    for f in files:
        assert not f.startswith(("tests/", "dice_testkit/", "benchmarks/", "scripts/", ".ci/", ".venv/", ".git/")), f
        assert not (f.startswith("docs/") and f.endswith(".png")), f
    # world 2's base models are the benchmark's, not the pack's
    assert not any(f.startswith("toyworld/weights/world2/base_unet") for f in files)
    size = sum(os.path.getsize(os.path.join(REPO, f)) for f in files)
    assert size < 20 * 2**20, f"the package would be {size / 2**20:.1f} MiB"


def test_copy_into_a_fresh_custom_nodes_folder_loads(tmp_path):
    """Install as a user does (copy the package's files into custom_nodes/) and load it with ComfyUI's own
    loader in a fresh interpreter; the e2e tests then run a real server on such a copy."""
    pack = comfy_server.install_pack(str(tmp_path / "custom_nodes"))
    assert not os.path.exists(os.path.join(pack, "tests"))
    code = f"""
import asyncio, json
from comfy.cli_args import args
args.cpu = True
import nodes
ok = asyncio.run(nodes.load_custom_node({pack!r}))
assert ok, "load_custom_node returned False"
print("NODES", json.dumps(sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("Dice"))))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=harness.comfyui_path())  # ComfyUI importable, nothing else
    r = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("NODES"))
    assert set(json.loads(line[len("NODES "):])) == harness.DICE_NODES
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("path", ["__init__.py", "nodes/__init__.py"])
def test_pack_does_not_import_tests_or_dev_tools(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        src = f.read()
    assert not re.search(r"^\s*(from|import)\s+(tests|harness|pytest)\b", src, re.M)


def test_readme_family_table_covers_every_family_module_and_every_cfg_family():
    """The table is generated (scripts/family_table.py); this checks it was regenerated after a family was
    added: every tiny-model module and every CFG family DICE accepts has a row."""
    import pkgutil

    from dice_core.families import cfg_families
    from dice_testkit import tiny_families

    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    table = readme.split("<!-- family-table:start -->")[1].split("<!-- family-table:end -->")[0]
    modules = [m.name for m in pkgutil.iter_modules(tiny_families.__path__)]
    assert len(modules) >= 17
    for name in modules:
        module = __import__(f"dice_testkit.tiny_families.{name}", fromlist=["FAMILY"])
        runtimes = ", ".join(f"ComfyUI {r}" for r in module.RUNTIMES)
        assert f"(`{module.FAMILY}`) | {runtimes} |" in table, f"{module.FAMILY} is not shown as tested; run make families"
    for info in cfg_families():
        assert f"(`{info.name}`)" in table, f"{info.name} has no row; run make families"
    assert "untested" not in table


def test_every_shipped_workflow_names_the_pack_of_each_node_and_the_model_to_fetch():
    """ComfyUI-Manager offers to install what a shared workflow needs from each node's cnr_id/ver and each
    loader's `models` entry (scripts/build_workflows.py writes them)."""
    import glob

    project = _pyproject()["project"]
    for path in sorted(glob.glob(os.path.join(REPO, "workflows", "*.json"))):
        with open(path, encoding="utf-8") as f:
            nodes = json.load(f)["nodes"]
        for node in nodes:
            props, where = node.get("properties", {}), f"{os.path.basename(path)} node {node['id']} {node['type']}"
            if node["type"] in ("MarkdownNote", "Note"):
                continue
            expected = (project["name"], project["version"]) if node["type"].startswith("Dice") else ("comfy-core",)
            assert (props.get("cnr_id"), props.get("ver"))[: len(expected)] == expected, f"{where}: {props}"
            assert props.get("ver"), where
            folder = {"CheckpointLoaderSimple": "checkpoints", "UNETLoader": "diffusion_models",
                      "CLIPLoader": "text_encoders", "VAELoader": "vae"}.get(node["type"])
            if folder:  # every loader of a model file says where to fetch it
                (model,) = props["models"]
                assert model["name"] == node["widgets_values"][0] and model["directory"] == folder, where
                url = urllib.parse.urlsplit(model["url"])
                assert url.scheme == "https" and url.path.endswith(f"/{model['name']}"), where
