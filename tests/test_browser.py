"""The real ComfyUI frontend (comfyui-frontend-package) in headless Debian chromium, against a real
server with the pack installed.

    .venv/bin/python -m pytest -m browser tests/test_browser.py

Skips when /usr/bin/chromium is missing, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse

import pytest

from dice_testkit import browser_util, comfy_server, harness
from dice_testkit.server_fixtures import TEST_OVERRIDES, WORKFLOW_NAMES, load_api_workflow, load_ui_workflow, output_files

pytestmark = pytest.mark.browser

DICE_NODES = sorted(harness.DICE_NODES)
DOCS_SCREENSHOT = os.path.join(harness.REPO, "docs", "screenshot_train.png")
# DICE_UPDATE_SCREENSHOT=1 also keeps the template browser's screenshots, one per runtime, under docs/screenshots/.
SCREENSHOTS = os.path.join(harness.REPO, "docs", "screenshots")

# Checks on the graph the frontend built: every link joins existing nodes' existing slots of compatible types.
LINK_CHECK_JS = """() => {
  const g = window.app.graph, problems = [];
  const links = g.links instanceof Map ? Array.from(g.links.values()) : Object.values(g.links || {});
  for (const l of links) {
    if (!l) continue;
    const o = g.getNodeById(l.origin_id), t = g.getNodeById(l.target_id);
    if (!o || !t) { problems.push('link ' + l.id + ' joins a missing node'); continue; }
    const out = o.outputs?.[l.origin_slot], inp = t.inputs?.[l.target_slot];
    if (!out || !inp) { problems.push('link ' + l.id + ' joins a missing slot'); continue; }
    if (inp.link !== l.id) problems.push('input ' + t.type + '.' + inp.name + ' does not point back at link ' + l.id);
    if (!(out.links || []).includes(l.id)) problems.push('output ' + o.type + '.' + out.name + ' does not list link ' + l.id);
    if (!window.LiteGraph.isValidConnection(out.type, inp.type))
      problems.push(o.type + '.' + out.name + ' (' + out.type + ') -> ' + t.type + '.' + inp.name + ' (' + inp.type + ')');
  }
  for (const n of g.nodes) if (n.has_errors || n.type === undefined) problems.push('node ' + n.id + ' ' + n.type + ' has errors');
  return {problems, links: links.filter(Boolean).length, nodes: g.nodes.length};
}"""

SET_WIDGETS_JS = """(overrides) => {
  for (const n of window.app.graph.nodes) {
    for (const [name, value] of Object.entries(overrides[n.type] || {})) {
      const w = (n.widgets || []).find(w => w.name === name);
      if (!w) throw new Error(n.type + ' has no widget ' + name);
      w.value = value;
    }
  }
}"""

BAD_CONSOLE_WORDS = ("invalid link", "link error", "missing node", "failed to load workflow", "could not find",
                     "not registered", "workflow validation", "links fixed")


def _models_the_workflows_name(server, trained_refiner: dict) -> None:
    """Give the server every model file the shipped workflows name, as a user who has them would.

    The frontend of ComfyUI 0.33 (1.49) marks a node with errors when a model combo names a file the
    server does not list (its missing-model check); 0.3.75's frontend (1.32) does not look. The tiny
    checkpoint stands in under each model name the workflows load, and the refiner the train workflow saved
    (dice_refiner_00001.safetensors) is already the name the apply workflows load."""
    loaders = {"CheckpointLoaderSimple": ("ckpt_name", "checkpoints"), "UNETLoader": ("unet_name", "diffusion_models"),
               "CLIPLoader": ("clip_name", "text_encoders"), "VAELoader": ("vae_name", "vae")}
    for name in WORKFLOW_NAMES:
        for node in load_api_workflow(name).values():
            widget, folder = loaders.get(node["class_type"], (None, None))
            model = node["inputs"].get(widget) if widget else None
            link = server.path("models", folder, model) if model else None
            if link and not os.path.exists(link):  # a stand-in file under the name (only the listing is checked)
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(server.path("models", "checkpoints", comfy_server.TINY_CKPT_NAME), link)
            refiner = node["inputs"].get("refiner_name") if node["class_type"] == "DiceLoadRefiner" else None
            assert refiner in (None, trained_refiner["name"]), f"{name} loads {refiner}, which the train workflow does not make"


@pytest.fixture(scope="module")
def page(request):
    browser_util.chromium_or_skip()  # before starting a server for nothing
    server = request.getfixturevalue("comfy_server_proc")
    _models_the_workflows_name(server, request.getfixturevalue("trained_refiner"))
    with browser_util.browser_page() as p:
        p.open(server.url)
        yield p


def _load(page, name: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Load a workflow file as a user opening it would; return what the console said meanwhile and any dialogs."""
    page.close_dialogs()
    page.close_toasts()
    page.page.wait_for_function("() => !document.querySelector('.p-toast-message')", timeout=5_000)
    mark = len(page.console)
    page.load_workflow(load_ui_workflow(name), f"{name}.json")
    page.page.wait_for_timeout(300)
    return page.console[mark:], page.dialogs()


def test_every_dice_node_is_registered_in_the_page(page):
    found = page.evaluate("""(ids) => ids.map(id => ({
        id, registered: id in window.LiteGraph.registered_node_types,
        category: window.LiteGraph.registered_node_types[id]?.category,
        title: window.LiteGraph.registered_node_types[id]?.title,
    }))""", DICE_NODES)
    for f in found:
        assert f["registered"], f"{f['id']} is not a LiteGraph node type in the page"
        assert f["category"] == harness.DICE_CATEGORIES[f["id"]]
        assert f["title"].startswith("DICE ")
    # The node appears with its widgets when created from the page.
    widgets = page.evaluate("""() => { const n = window.LiteGraph.createNode('DiceRefineConditioning');
        return [n.inputs.map(i => i.name), n.widgets.map(w => w.name)]; }""")
    assert widgets[0][:2] == ["positive", "refiner"] and "negative" in widgets[0]
    assert widgets[1] == ["strength", "guidance_scale", "late_strength", "late_from"]


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_loads_cleanly_and_converts_to_its_api_twin(page, name):
    console, dialogs = _load(page, name)
    assert not [d for d in dialogs if "missing" in d.lower()], f"missing-nodes dialog for {name}: {dialogs}"
    assert not dialogs, f"dialogs after loading {name}: {dialogs}"
    toasts = [t for t in page.toasts() if any(w in t.lower() for w in ("validation", "links fixed", "invalid", "error"))]
    assert not toasts, f"toasts after loading {name}: {toasts}"
    bad = [f"{kind}: {text}" for kind, text in console
           if kind in ("error", "warning") and any(w in text.lower() for w in BAD_CONSOLE_WORDS)]
    assert not bad, f"console after loading {name}:\n" + "\n".join(bad)
    check = page.evaluate(LINK_CHECK_JS)
    ui = load_ui_workflow(name)
    assert not check["problems"], check["problems"]
    assert check["nodes"] == len(ui["nodes"]) and check["links"] == len(ui["links"])
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert json.loads(json.dumps(prompt)) == load_api_workflow(name), (
        f"workflows/api/{name}.json differs from the frontend's conversion of workflows/{name}.json; "
        "rebuild both with scripts/build_workflows.py")


def test_train_workflow_screenshot(page, tmp_path):
    # A test run must not rewrite tracked files: the README's copy is refreshed only on request.
    update = os.environ.get("DICE_UPDATE_SCREENSHOT") == "1"
    screenshot = DOCS_SCREENSHOT if update else str(tmp_path / "screenshot_train.png")
    _load(page, "dice_train")
    page.fit_and_screenshot(screenshot)
    with open(screenshot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(screenshot) > 20_000


def test_queueing_apply_from_the_page_saves_its_image(page, request):
    # Requested here, not as arguments: session fixtures would otherwise train before `page` can skip.
    server = request.getfixturevalue("comfy_server_proc")
    trained_refiner = request.getfixturevalue("trained_refiner")
    _load(page, "dice_apply")
    # A user would pick their checkpoint and refiner in the combos and lower the size; do the same.
    overrides = {**TEST_OVERRIDES, "DiceLoadRefiner": {"refiner_name": trained_refiner["name"]},
                 "KSampler": {**TEST_OVERRIDES["KSampler"], "seed": int(time.time()) % 100_000}}  # never a cache hit
    page.evaluate(SET_WIDGETS_JS, overrides)
    entry = page.queue_and_wait(server)
    images = output_files(entry)
    assert len(images) == 1
    path = server.path("output", images[0]["subfolder"], images[0]["filename"])
    assert os.path.isfile(path) and images[0]["filename"].startswith("apply_")
    # The page received the result too (the SaveImage node shows it).
    page.page.wait_for_function("() => Object.keys(window.app.nodeOutputs || {}).length > 0 || "
                                "document.querySelectorAll('img[src*=\"/view\"]').length > 0", timeout=30_000)


def test_training_from_the_page_previews_the_loss_plot_on_the_train_node(page, request, tmp_path):
    server = request.getfixturevalue("comfy_server_proc")
    _load(page, "dice_train")
    overrides = {**TEST_OVERRIDES, "DiceTrainRefiner": {**TEST_OVERRIDES["DiceTrainRefiner"], "seed": int(time.time()) % 100_000},
                 "DiceSaveRefiner": {"filename_prefix": "dice_browser_run"}}
    page.evaluate(SET_WIDGETS_JS, overrides)
    entry = page.queue_and_wait(server, timeout=240)
    train_id = next(k for k, n in entry["prompt"][2].items() if n["class_type"] == "DiceTrainRefiner")
    assert [img["type"] for img in entry["outputs"][train_id]["images"]] == ["temp"]
    # The frontend got the preview for that node and shows it there: both frontends keep a node's images in
    # app.nodeOutputs under its id, and draw the loaded <img> elements as node.imgs.
    page.page.wait_for_function(
        "(id) => (window.app.nodeOutputs?.[id]?.images?.length > 0) && (window.app.graph.getNodeById(Number(id))?.imgs?.length > 0)",
        arg=train_id, timeout=30_000)
    # DICE Save Refiner's message (ui text, which the stock frontend does not draw) is shown on the node by the
    # pack's web/js/dice_save_message.js.
    save_id = next(k for k, n in entry["prompt"][2].items() if n["class_type"] == "DiceSaveRefiner")
    message = page.page.wait_for_function(
        "(id) => window.app.graph.getNodeById(Number(id))?.widgets?.find(w => w.name === 'saved')?.value || null",
        arg=save_id, timeout=30_000).json_value()
    assert message.startswith("saved models/dice/dice_browser_run_"), message
    page.fit_and_screenshot(str(tmp_path / "train_node_loss_plot.png"))


def _screenshot_path(tmp_path, name: str) -> str:
    if os.environ.get("DICE_UPDATE_SCREENSHOT") == "1":
        os.makedirs(SCREENSHOTS, exist_ok=True)
        return os.path.join(SCREENSHOTS, f"{name}_comfyui-{harness.comfyui_version()}.png")
    return str(tmp_path / f"{name}.png")


# The frontends fetch each thumbnail and show it from a blob: URL, with the template's name as its alt text.
THUMBNAILS_JS = """(prefix) => ({
    shown: Array.from(document.querySelectorAll('img[alt]')).filter(i => i.complete && i.naturalWidth > 0)
        .map(i => ({name: i.alt, width: i.naturalWidth, height: i.naturalHeight})),
})"""


def _open_pack_templates(page) -> None:
    """Templates (the sidebar button, or its command), then the pack's entry under Extensions."""
    page.close_dialogs()
    page.command("Comfy.BrowseTemplates")
    page.page.get_by_text(comfy_server.PACK_DIR_NAME, exact=True).first.click()
    page.page.wait_for_timeout(500)


def test_template_browser_lists_every_template_with_its_thumbnail(page, tmp_path):
    """Both frontends (1.32 on 0.3.75, 1.49 on 0.33) list custom-node templates from workflows/ and load the
    <name>.jpg beside each; without one a card shows a placeholder."""
    _open_pack_templates(page)
    names = sorted(WORKFLOW_NAMES)
    for name in names:
        assert page.page.get_by_text(name, exact=True).first.is_visible(), f"{name} is not listed"
    prefix = f"/workflow_templates/{comfy_server.PACK_DIR_NAME}/"
    page.page.wait_for_function(
        f"(names) => ({THUMBNAILS_JS})({json.dumps(prefix)}).shown.filter(i => names.includes(i.name)).length >= names.length",
        arg=names, timeout=30_000)
    found = page.evaluate(THUMBNAILS_JS, prefix)
    from PIL import Image

    for name in names:
        with Image.open(os.path.join(harness.REPO, "workflows", f"{name}.jpg")) as jpg:
            expected = {"name": name, "width": jpg.width, "height": jpg.height}
        assert expected in found["shown"], f"{name}: the card does not show workflows/{name}.jpg ({found['shown']})"
        served = {urllib.parse.urlsplit(url).path for url, status in page.responses if status == 200}
        assert served & {f"/api{prefix}{name}.jpg", f"{prefix}{name}.jpg"}, [r for r in page.responses if prefix in r[0]]
    page.page.screenshot(path=_screenshot_path(tmp_path, "template_browser"))
    page.close_dialogs()


def test_toy_template_runs_from_the_template_browser(page, request, tmp_path):
    """The template that needs no model file: opened from the template browser and queued from the page, it
    trains a refiner on the toy world and saves cfg 1 | cfg 5 | DICE side by side."""
    server = request.getfixturevalue("comfy_server_proc")
    _open_pack_templates(page)
    page.page.locator('img[alt="dice_toyworld"]').first.click()  # the card's thumbnail
    page.page.wait_for_function("() => window.app.graph.nodes.some(n => n.type === 'DiceToyWorldLoader')", timeout=30_000)
    page.close_dialogs()
    assert not [d for d in page.dialogs() if "missing" in d.lower()], page.dialogs()
    # Shorter than the shipped 300 steps, so that two CPU cores finish in seconds; sizes stay as shipped.
    page.evaluate(SET_WIDGETS_JS, {
        "DiceTrainRefiner": {"steps": 4, "batch_size": 4, "samples_per_prompt": 1, "teacher_steps": 3,
                             "seed": int(time.time()) % 100_000},
        "KSampler": {"steps": 3}, "EmptyLatentImage": {"batch_size": 1},
    })
    entry = page.queue_and_wait(server, timeout=300)
    (image,) = output_files(entry)
    from PIL import Image

    with Image.open(server.path("output", image["subfolder"], image["filename"])) as saved:
        assert saved.size == (3 * 128 + 2 * 8, 128), saved.size  # three 128 px panels, 8 px apart
    page.fit_and_screenshot(_screenshot_path(tmp_path, "toy_template_run"))


def _open_help(page, node_id: str, display_name: str) -> None:
    """Open a node's help page as a user does. 0.33's frontend (1.49): select the node on the canvas and press
    Node Info in the selection toolbox. 0.3.75's (1.32), which has no such button: the node library, search
    for the node, and its help (?) button."""
    page.close_dialogs()
    page.evaluate("""(id) => { const g = window.app.graph; g.clear();
        const n = window.LiteGraph.createNode(id); g.add(n); n.pos = [200, 200];
        window.app.canvas.selectNode(n); window.app.canvas.setDirty(true, true); }""", node_id)
    page.page.wait_for_timeout(500)
    info = page.page.get_by_label("Node Info")
    if info.count():
        info.first.click()
        return
    page.command("Workspace.ToggleSidebarTab.node-library")
    page.page.get_by_placeholder("Search Nodes...").first.fill(display_name)
    leaf = page.page.locator(".tree-leaf", has_text=display_name).first
    leaf.hover()
    leaf.locator(".help-button").click()


@pytest.mark.parametrize("node_id", DICE_NODES)
def test_each_nodes_help_page_opens_in_the_frontend(page, node_id, tmp_path):
    """The frontend fetches web/docs/<NodeId>.md through the pack's WEB_DIRECTORY and renders its sections."""
    display_name = page.evaluate("(id) => window.LiteGraph.registered_node_types[id].title", node_id)
    mark = len(page.responses)
    _open_help(page, node_id, display_name)
    page.page.wait_for_function("""() => Array.from(document.querySelectorAll('h2'))
        .map(h => h.innerText.trim()).includes('Common errors')""", timeout=30_000)
    headings = page.evaluate("() => Array.from(document.querySelectorAll('h1, h2')).map(h => h.innerText.trim())")
    assert display_name in headings and {"What it does", "Inputs", "What to expect", "Common errors"} <= set(headings)
    served = {urllib.parse.urlsplit(url).path for url, status in page.responses[mark:] if status == 200}
    assert f"/extensions/{comfy_server.PACK_DIR_NAME}/docs/{node_id}.md" in served, served
    if node_id == "DiceTrainRefiner":
        page.page.screenshot(path=_screenshot_path(tmp_path, "help_page"))
    if page.page.get_by_label("Node Info").count() == 0:  # 0.3.75: back to the node list, and close the library
        page.page.locator("button:has(.pi-arrow-left)").first.click()
        page.command("Workspace.ToggleSidebarTab.node-library")


# Every row of the node library's tree, in order, as (depth, label). 0.3.75's frontend (1.32, PrimeVue) nests <li
# role=treeitem aria-label=...>; 0.33's (1.49) lists flat rows with aria-level and the label as their first text line.
LIBRARY_ROWS_JS = """() => Array.from(document.querySelectorAll('[role=treeitem]')).map(e => [
    Number(e.getAttribute('aria-level')), (e.getAttribute('aria-label') || e.innerText.split('\\n')[0]).trim()])"""


def _library_rows(page) -> list[tuple[int, str]]:
    return [tuple(row) for row in page.evaluate(LIBRARY_ROWS_JS)]


def _library_folders(page) -> dict[str, str]:
    """label -> the folder path the library shows it under (first occurrence), from the rows' depths."""
    stack, found = [], {}
    for level, label in _library_rows(page):
        del stack[level - 1:]
        found.setdefault(label, "/".join(stack))
        stack.append(label)
    return found


# The index of the first folder row with a label, and whether it is open (-1 and None if there is none).
FOLDER_ROW_JS = """(label) => { const rows = Array.from(document.querySelectorAll('[role=treeitem]'));
    const i = rows.findIndex(e => (e.getAttribute('aria-label') || e.innerText.split('\\n')[0]).trim() === label
        && ['true', 'false'].includes(e.getAttribute('aria-expanded')));
    return [i, i < 0 ? null : rows[i].getAttribute('aria-expanded') === 'true']; }"""


def _expand(page, label: str) -> None:
    """Click a folder of the library open, as a user does (an open one stays open)."""
    row, is_open = page.evaluate(FOLDER_ROW_JS, label)
    assert row >= 0, f"no folder {label!r} in the node library: {_library_rows(page)}"
    if not is_open:
        page.page.locator("[role=treeitem]").nth(row).click()
        page.page.wait_for_function(f"(label) => ({FOLDER_ROW_JS})(label)[1] === true", arg=label, timeout=5_000)


def _source_filter(page, source: str) -> None:
    """0.33's library filters by source (All, Comfy Nodes, Extensions, ...): the pack's nodes are under Extensions."""
    item = page.page.get_by_role("menuitemcheckbox", name=source, exact=True)
    page.page.get_by_label("Filter").first.click()
    item.wait_for(timeout=10_000)
    if item.get_attribute("aria-checked") != "true":
        item.click()
        page.page.wait_for_function("(name) => Array.from(document.querySelectorAll('[role=menuitemcheckbox]'))"
                                    ".some(e => e.innerText.trim() === name && e.getAttribute('aria-checked') === 'true')",
                                    arg=source, timeout=5_000)
    page.page.get_by_label("Filter").first.click()  # the menu stays open after a choice (Escape does not close it)
    item.wait_for(state="detached", timeout=5_000)


def test_node_library_shows_training_beside_cores_and_finds_nodes_by_alias(page, request, tmp_path):
    """Where a user finds the nodes: DICE Train Refiner in `training` (0.3.75: beside core's Train LoRA and Plot
    Loss Graph; 0.33 shows packs apart, under Extensions), the others in conditioning > DICE. On 0.33, whose
    schema has search_aliases, the library's search finds a node by an alias that is not in its name."""
    server = request.getfixturevalue("comfy_server_proc")
    names = page.evaluate("(ids) => Object.fromEntries(ids.map(id => [id, window.LiteGraph.registered_node_types[id].title]))",
                          DICE_NODES)
    core_training = page.evaluate("() => window.LiteGraph.registered_node_types['TrainLoraNode']?.category")
    page.close_dialogs()
    search = page.page.get_by_placeholder("Search Nodes...").or_(page.page.get_by_placeholder("Search...")).first
    if not search.is_visible():  # the library is a sidebar tab that the same command opens and closes
        page.command("Workspace.ToggleSidebarTab.node-library")
    search.wait_for(timeout=10_000)
    search.fill("")  # the help-page test may have left a search there
    source_filter = page.page.get_by_label("Filter").count() > 0  # 0.33's frontend
    filtered = False
    try:
        if source_filter:
            _source_filter(page, "Extensions")
            filtered = True
        _expand(page, "training")
        folders = _library_folders(page)
        assert folders.get(names["DiceTrainRefiner"]) == "training", folders
        if core_training == "training":  # core's training nodes share the folder (0.3.75)
            assert folders.get("Train LoRA") == "training", folders
        if not filtered:  # 0.3.75: open, core's 59 conditioning nodes would push training out of view
            page.page.screenshot(path=_screenshot_path(tmp_path, "node_library"))
        _expand(page, "conditioning")
        _expand(page, "DICE")
        folders = _library_folders(page)
        for node_id, category in harness.DICE_CATEGORIES.items():
            assert folders.get(names[node_id]) == category, (node_id, folders)
        if filtered:  # 0.33: the pack's own tree, every node in view
            page.page.screenshot(path=_screenshot_path(tmp_path, "node_library"))

        aliases = server.get("/object_info/DiceTrainRefiner")["DiceTrainRefiner"].get("search_aliases")
        if aliases:  # only where the schema takes them (0.33; test_nodes pins which runtime has them)
            if filtered:
                _source_filter(page, "All")
                filtered = False
            assert "cfg distillation" in aliases
            train = page.page.locator("[role=treeitem]", has_text=names["DiceTrainRefiner"]).first
            search.fill("xyzzy")  # the control: the list shows search results, not the folders opened above
            train.wait_for(state="detached", timeout=10_000)
            search.fill("cfg distillation")  # in no node's name; DICE Train Refiner's alias
            train.wait_for(timeout=10_000)
            assert names["DiceTrainRefiner"] in [label for _, label in _library_rows(page)]
    finally:
        search.fill("")
        if filtered:
            _source_filter(page, "All")
        page.command("Workspace.ToggleSidebarTab.node-library")
