"""Headless Debian chromium driving the real ComfyUI frontend (Playwright, sync API).

Never downloads a browser: it uses /usr/bin/chromium (or $DICE_CHROMIUM). `chromium_or_skip()`
skips a test with a clear message when that browser is missing, except under CI=true, where a
missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

CHROMIUM = os.environ.get("DICE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}

# The page is ready once the app has registered the server's node definitions.
APP_READY_JS = """() => !!(window.app && window.app.graph && window.LiteGraph && window.app.canvas
    && Object.keys(window.LiteGraph.registered_node_types).length > 50)"""

# Dismiss first-run UI before any page script runs (the "Nodes 2.0" banner keeps this flag in localStorage).
INIT_SCRIPT = "try { localStorage.setItem('vueNodesBannerDismissed', 'true'); } catch (e) {}"


def chromium_problem() -> str | None:
    if not os.path.isfile(CHROMIUM) or not os.access(CHROMIUM, os.X_OK):
        return (f"no chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) or set DICE_CHROMIUM; "
                "this suite never downloads a browser (no `playwright install`)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright; no browser download needed)"
    return None


def chromium_or_skip() -> None:
    import pytest

    problem = chromium_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the browser tests cannot run: {problem}")
    pytest.skip(problem)


class Page:
    """One page on the ComfyUI frontend, with everything the console said."""

    def __init__(self, page):
        self.page = page
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.responses: list[tuple[str, int]] = []  # (url, status) of every response the page received
        page.on("response", lambda r: self.responses.append((r.url, r.status)))

    def open(self, url: str, timeout_ms: int = 60_000) -> Page:
        self.page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
        self.page.wait_for_function(APP_READY_JS, timeout=timeout_ms)
        # The default graph loads asynchronously after the node defs; let it settle before we replace it.
        self.page.wait_for_function("() => window.app.graph.nodes.length >= 0 && !document.querySelector('.p-progressspinner')",
                                    timeout=timeout_ms)
        self.page.wait_for_timeout(500)
        return self

    def evaluate(self, js: str, arg=None):
        return self.page.evaluate(js, arg)

    def dialogs(self) -> list[str]:
        return self.evaluate("() => Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText)")

    def toasts(self) -> list[str]:
        return self.evaluate("() => Array.from(document.querySelectorAll('.p-toast-message')).map(d => d.innerText)")

    def close_toasts(self) -> None:
        self.evaluate("() => document.querySelectorAll('.p-toast-close-button').forEach(b => b.click())")

    def close_dialogs(self) -> None:
        self.evaluate("() => document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close').forEach(b => b.click())")

    def command(self, command_id: str):
        return self.evaluate("(id) => window.app.extensionManager.command.execute(id)", command_id)

    def download(self, command_id: str, path: str) -> str:
        """Run a frontend command that downloads a file (Export, Export (API)) and save what it sends."""
        with self.page.expect_download(timeout=30_000) as info:
            self.command(command_id)
        info.value.save_as(path)
        return path

    def load_workflow(self, data: dict, name: str | None = None) -> None:
        """What opening a workflow file does: app.loadGraphData with validation and the missing-node checks."""
        self.evaluate("async ([data, name]) => { await window.app.loadGraphData(data, true, true, name); }", [data, name])
        self.page.wait_for_timeout(300)

    def queue_and_wait(self, server, timeout: float = 120) -> dict:
        """Press Queue in the page (app.queuePrompt) and wait for the prompt's finished /history entry."""
        import time

        before = set(server.get("/history"))
        started = time.monotonic()
        self.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        while time.monotonic() - started < timeout:
            hist = server.get("/history")
            new = [k for k in hist if k not in before]
            if new and hist[new[0]].get("status", {}).get("completed"):
                return hist[new[0]]
            if new and hist[new[0]].get("status", {}).get("status_str") == "error":
                raise RuntimeError(f"the queued prompt failed: {hist[new[0]]['status']}")
            time.sleep(0.3)
        raise TimeoutError(f"no finished prompt within {timeout} s; page dialogs: {self.dialogs()}\n{server.log_tail()}")

    def fit_and_screenshot(self, path: str) -> str:
        self.evaluate("""() => { const c = window.app.canvas; c.deselectAll?.(); c.setDirty(true, true); }""")
        self.command("Comfy.Canvas.FitView")
        self.page.wait_for_timeout(400)
        self.page.screenshot(path=path)
        return path


@contextlib.contextmanager
def browser_page():
    """A fresh chromium profile and one page; both removed afterwards."""
    from playwright.sync_api import sync_playwright

    user_data = tempfile.mkdtemp(prefix="dice-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                user_data, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT,
                accept_downloads=True,
            )
            try:
                ctx.add_init_script(INIT_SCRIPT)
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                page.set_default_timeout(30_000)
                yield Page(page)
            finally:
                ctx.close()
    finally:
        shutil.rmtree(user_data, ignore_errors=True)
