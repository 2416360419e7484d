"""The layout docs/architecture.md states, checked on the source: who may import whom, where the import path
is set, and how long a signature may get. Each rule is also run on a small counter-example, so a checker
that stopped seeing anything would fail here rather than pass."""

from __future__ import annotations

import ast
import os
import subprocess

import pytest

from dice_testkit import harness

REPO = harness.REPO
RUNTIME = ("dice_core", "dice_comfy", "nodes", "dice_cli", "toyworld")  # what the published pack runs
DEV = {"dice_testkit", "tests", "benchmarks", "scripts"}  # never imported at run time
# ComfyUI's own top-level modules. `nodes` alone is ComfyUI's nodes.py; the pack's nodes/ is "nodes.<module>"
# (PACK_NODES below), since ComfyUI's nodes is a module with no submodules.
COMFY = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "comfy_config", "folder_paths", "nodes", "node_helpers",
         "server", "execution", "latent_preview", "comfyui_version"}
PACK_NODES = "nodes/"
FORBIDDEN = {
    "dice_core": COMFY | DEV | {"dice_comfy", "dice_cli", "toyworld", PACK_NODES},  # pure torch
    "dice_comfy": DEV | {"dice_cli", PACK_NODES},  # below the nodes and the CLI
    "nodes": DEV | (COMFY - {"comfy_api"}) | {"dice_cli"},  # the V3 schema only; ComfyUI itself through dice_comfy
    "dice_cli": DEV | COMFY | {PACK_NODES},  # ComfyUI through dice_comfy
    "toyworld": DEV | {"dice_cli", PACK_NODES},  # a model world: builds on ComfyUI's classes, knows no front end
    "__init__.py": DEV | {"dice_cli"},
}


def _package_of(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else rel


def imported_modules(source: str, rel: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in a file at repo path `rel`; relative imports resolved."""
    here = rel[:-3].split("/")  # "nodes/train_node.py" -> ["nodes", "train_node"]
    package = here if rel.endswith("__init__.py") else here[:-1]
    package = [p for p in package if p != "__init__"]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
                # A relative import is always of the pack's own files: record each name, so that "from ..nodes
                # import train_node" reads as the pack's nodes.train_node, not as ComfyUI's nodes.
                found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _kind(module: str) -> str:
    """The name a rule in FORBIDDEN uses for a module."""
    top = module.split(".", 1)[0]
    if top == "nodes" and "." in module:
        return PACK_NODES
    return top


def violations(source: str, rel: str) -> list[str]:
    package = _package_of(rel)
    forbidden = FORBIDDEN.get(package, set())
    out = []
    for line, module in imported_modules(source, rel):
        if package == "nodes" and _kind(module) == PACK_NODES:
            continue  # within the nodes package
        if _kind(module) in forbidden:
            out.append(f"{rel}:{line}: {package} imports {module}")
    return out


def _python_files(*roots: str) -> list[str]:
    files = []
    for root in roots:
        path = os.path.join(REPO, root)
        if os.path.isfile(path):
            files.append(root)
            continue
        for dirpath, dirnames, names in os.walk(path):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            files += [os.path.relpath(os.path.join(dirpath, n), REPO) for n in names if n.endswith(".py")]
    return sorted(f.replace(os.sep, "/") for f in files)


def _read(rel: str) -> str:
    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
        return f.read()


def test_imports_follow_the_stated_direction():
    found = [v for rel in _python_files(*RUNTIME, "__init__.py") for v in violations(_read(rel), rel)]
    assert not found, "imports against docs/architecture.md's direction:\n" + "\n".join(found)


def test_the_nodes_and_the_cli_reach_comfyui_through_dice_comfy():
    for package in ("nodes", "dice_cli"):
        modules = {m for rel in _python_files(package) for _, m in imported_modules(_read(rel), rel)}
        assert any(m.startswith("dice_comfy") for m in modules), f"{package} no longer uses dice_comfy"


@pytest.mark.parametrize("rel, source, expected", [
    ("dice_core/x.py", "import comfy.sd\n", "dice_core imports comfy.sd"),
    ("dice_core/x.py", "from dice_comfy import bridge\n", "dice_core imports dice_comfy"),
    ("dice_comfy/x.py", "from nodes.train_node import X\n", "dice_comfy imports nodes.train_node"),
    ("nodes/x.py", "import folder_paths\n", "nodes imports folder_paths"),
    ("nodes/x.py", "def f():\n    from dice_testkit import tiny_models\n", "nodes imports dice_testkit"),
    ("dice_cli/x.py", "from ..nodes import train_node\n", "dice_cli imports nodes.train_node"),
    ("toyworld/x.py", "from dice_cli import cli\n", "toyworld imports dice_cli"),
    ("__init__.py", "import tests.conftest\n", "__init__.py imports tests.conftest"),
])
def test_the_direction_check_sees_a_wrong_import(rel, source, expected):
    assert any(v.endswith(expected) for v in violations(source, rel)), violations(source, rel)


def test_the_direction_check_allows_the_stated_imports():
    allowed = {
        "nodes/x.py": "from comfy_api.v0_0_2 import io\nfrom dice_comfy import session\nfrom .refiner_nodes import A\n",
        "dice_comfy/x.py": "import comfy.samplers\nimport folder_paths\nfrom dice_core import refine\n",
        "dice_cli/x.py": "from dice_comfy import bridge\nfrom toyworld.comfy_objects import load_toy_world\n",
        "__init__.py": "from .nodes import comfy_entrypoint\n",
    }
    for rel, source in allowed.items():
        assert violations(source, rel) == [], rel


# The import path is set in these places only: the test-support package (the harness and the suite's set-up), the
# one module that finds ComfyUI, and the pack's __init__ (ComfyUI imports it from custom_nodes/).
PATH_SETTERS = ("dice_testkit/", "dice_comfy/setup.py", "__init__.py")


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        return [rel for rel in out.split() if os.path.isfile(os.path.join(REPO, rel))]  # not files deleted but unstaged
    except (OSError, subprocess.CalledProcessError):  # a copy without .git: every file under the repo
        return [os.path.relpath(os.path.join(d, n), REPO) for d, _, ns in os.walk(REPO) if ".git" not in d for n in ns]


def test_the_import_path_is_set_in_one_place():
    needle = "sys" + ".path"  # split, so this file does not find itself
    hits = []
    for rel in _tracked_files():
        if rel.startswith(PATH_SETTERS) or not rel.endswith((".py", ".md", ".toml", ".sh", ".cfg", ".ini", "Makefile")):
            continue
        with open(os.path.join(REPO, rel), encoding="utf-8", errors="replace") as f:
            hits += [f"{rel}:{i}" for i, line in enumerate(f, 1) if needle in line]
    assert not hits, f"{needle} outside {PATH_SETTERS}: " + ", ".join(hits)


MAX_PARAMETERS = 8


def long_signatures(source: str, rel: str) -> list[str]:
    """Functions with more than MAX_PARAMETERS parameters (self/cls not counted), except a node's execute:
    ComfyUI passes every input of a node to it as a keyword."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "execute":
            args = node.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            names = [n for n in names if n not in ("self", "cls")]
            if len(names) > MAX_PARAMETERS:
                out.append(f"{rel}:{node.lineno} {node.name} has {len(names)} parameters")
    return out


def test_no_function_outside_a_nodes_execute_takes_more_than_eight_parameters():
    found = [v for rel in _python_files(*RUNTIME, "dice_testkit", "benchmarks", "scripts") for v in long_signatures(_read(rel), rel)]
    assert not found, "\n".join(found)


def test_the_signature_check_counts_keyword_only_parameters():
    source = "def f(a, b, c, d, *, e, f, g, h, i):\n    pass\nclass N:\n    def execute(cls, a, b, c, d, e, f, g, h, i):\n        pass\n"
    assert long_signatures(source, "x.py") == ["x.py:1 f has 9 parameters"]
