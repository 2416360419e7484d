"""Each node's help page: web/docs/<NodeName>.md, which ComfyUI's frontend shows in the node library.

The frontend fetches /extensions/<pack folder>/docs/<Node>.md from the folder named by WEB_DIRECTORY. These
tests check that every registered node has a page, that the page names every input of the node's schema and
has the four fixed sections, that the error sentences it quotes are the ones the code raises, that the pages
are part of the published package, and (e2e) that a real server serves them.

    .venv/bin/python -m pytest tests/test_help_pages.py
"""

from __future__ import annotations

import ast
import os
import re
import sys
import urllib.request

import pytest

from dice_testkit import comfy_server, harness

DOCS = os.path.join(harness.REPO, "web", "docs")
DICE_NODES = harness.DICE_NODES
# The four sections every page has, in this order.
SECTIONS = ["## What it does", "## Inputs", "## What to expect", "## Common errors"]


def page(node_id: str) -> str:
    with open(os.path.join(DOCS, f"{node_id}.md"), encoding="utf-8") as f:
        return f.read()


def section(text: str, heading: str) -> str:
    """The text under one `## ` heading, up to the next `## ` heading."""
    start = text.index(heading + "\n") + len(heading) + 1
    nxt = text.find("\n## ", start)
    return text[start:] if nxt < 0 else text[start:nxt]


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def pack_nodes(comfy_nodes) -> dict:
    """node_id -> class, for every node the pack registers (its nodes/__init__.py NODES list)."""
    # The package of a node's module is the pack's nodes/ package (loaded under ComfyUI's name for it).
    package = sys.modules[sys.modules[comfy_nodes["DiceLoadRefiner"].__module__].__package__]
    assert os.path.dirname(package.__file__) == os.path.join(harness.REPO, "nodes")
    classes = package.NODES
    found = {cls.define_schema().node_id: cls for cls in classes}
    for node_id, cls in found.items():
        assert comfy_nodes.get(node_id) is cls, f"{node_id} is in NODES but ComfyUI did not register it"
    return found


def test_the_pack_registers_exactly_the_nodes_with_pages(pack_nodes):
    assert set(pack_nodes) == DICE_NODES
    pages = {name[:-3] for name in os.listdir(DOCS) if name.endswith(".md")}
    assert pages == DICE_NODES, f"pages without a node: {pages - DICE_NODES}; nodes without a page: {DICE_NODES - pages}"


@pytest.mark.parametrize("node_id", sorted(DICE_NODES))
def test_page_names_every_input_and_has_the_four_sections(pack_nodes, node_id):
    text = page(node_id)
    schema = pack_nodes[node_id].define_schema()
    assert text.startswith(f"# {schema.display_name}\n"), f"{node_id}.md should start with '# {schema.display_name}'"
    positions = []
    for heading in SECTIONS:
        assert re.search(rf"^{re.escape(heading)}$", text, re.M), f"{node_id}.md has no '{heading}' section"
        positions.append(text.index(heading + "\n"))
    assert positions == sorted(positions), f"{node_id}.md: the sections should come in the order {SECTIONS}"
    for heading in SECTIONS:
        assert section(text, heading).strip(), f"{node_id}.md: '{heading}' is empty"
    inputs = section(text, "## Inputs")
    for inp in schema.inputs:
        assert f"`{inp.id}`" in inputs, f"{node_id}.md does not describe the input `{inp.id}` under '## Inputs'"
    if not schema.inputs:
        assert "no inputs" in inputs.lower() or "none" in inputs.lower()


@pytest.mark.parametrize("node_id", sorted(DICE_NODES))
def test_page_is_plain_markdown(node_id):
    """No HTML: outside code spans, nothing that a Markdown renderer would read as a tag (and hide)."""
    text = page(node_id)
    outside_code = re.sub(r"`[^`\n]*`", "", text)
    tags = re.findall(r"</?[A-Za-z!][^>\n]*>", outside_code)
    assert not tags, f"{node_id}.md has HTML-like text outside code spans: {tags}"
    assert "```" not in text or text.count("```") % 2 == 0


def test_pages_quote_the_errors_the_code_raises(comfy_nodes):
    """The sentences a user sees: taken from the code here, so a reworded error fails this test."""
    from dice_core.families import check_same_family, family_info

    with pytest.raises(ValueError) as wrong_family:
        check_same_family("SDXL", "AuraFlow")
    with pytest.raises(ValueError) as flux:
        family_info("Flux")
    refine, train = flat(page("DiceRefineConditioning")), flat(page("DiceTrainRefiner"))
    assert str(wrong_family.value) in refine
    assert "SDXL" in str(wrong_family.value) and "AuraFlow" in str(wrong_family.value)  # it names both families
    assert str(flux.value) in refine and str(flux.value) in train

    from dice_comfy import fast_path
    from dice_comfy.conditioning import ZERO_NEGATIVE_WARNING

    assert ZERO_NEGATIVE_WARNING in refine
    from dice_comfy.conditioning import DIAL_WARNING, UNTRAINED_NEGATIVE_WARNING

    assert UNTRAINED_NEGATIVE_WARNING in refine
    from dice_comfy.conditioning import OTHER_CHECKPOINT_WARNING, OTHER_LORAS_WARNING

    assert OTHER_LORAS_WARNING in refine
    assert OTHER_CHECKPOINT_WARNING.replace("%s", "<trained>", 1).replace("%s", "<now>", 1) in refine
    assert DIAL_WARNING.replace("%g", "<w>", 1).replace("%g", "<scale>", 1).replace("%.3g", "<factor>") in refine
    check = flat(page("DiceFastPathCheck"))
    assert fast_path.CFG1_DISABLED_WARNING in check
    assert fast_path.CFG_ABOVE_1_WARNING.replace("%.3g", "<cfg>") in check


def test_load_page_quotes_the_corrupt_and_missing_file_errors(tmp_path):
    from dice_core.fileformat import RefinerFileError, load_refiner

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(RefinerFileError) as corrupt:
        load_refiner(str(broken))
    with pytest.raises(RefinerFileError) as missing:
        load_refiner(str(tmp_path / "absent.safetensors"))
    text = flat(page("DiceLoadRefiner"))
    corrupt_sentence = str(corrupt.value).split(": ", 1)[0].replace(str(broken), "<path>")
    assert corrupt_sentence.startswith("<path> is not a readable safetensors file (truncated or corrupt?)")
    assert corrupt_sentence in text
    assert str(missing.value).replace(str(tmp_path / "absent.safetensors"), "<path>") in text


def test_web_directory_is_set_and_published():
    with open(os.path.join(harness.REPO, "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    assigned = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert assigned.get("WEB_DIRECTORY") == "./web", "__init__.py must set WEB_DIRECTORY = './web' at top level"
    published = set(comfy_server.pack_files())
    for node_id in DICE_NODES:
        assert f"web/docs/{node_id}.md" in published, f"web/docs/{node_id}.md is left out of the package (.comfyignore?)"


@pytest.mark.e2e
def test_server_serves_the_help_page(comfy_server_proc):
    url = f"{comfy_server_proc.url}/extensions/{comfy_server.PACK_DIR_NAME}/docs/DiceTrainRefiner.md"
    with urllib.request.urlopen(url, timeout=30) as r:
        status, body = r.status, r.read()
    assert status == 200, f"GET {url} -> {status}; server log:\n{comfy_server_proc.log_tail()}"
    with open(os.path.join(DOCS, "DiceTrainRefiner.md"), "rb") as f:
        assert body == f.read()
