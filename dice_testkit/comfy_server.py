"""A real ComfyUI server (main.py --cpu) with this pack installed, for the e2e and browser tests.

The pack is installed the way a user (or the registry) installs it: the repo's files, minus what
.gitignore and .comfyignore exclude, are copied into a fresh <base>/custom_nodes/ComfyUI-DICE. The
server runs with --base-directory <base>, so models/, input/, output/, temp/ and user/ all live
in a temp folder and the ComfyUI tree is never written to.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from dice_testkit import harness

REPO = harness.REPO
PACK_DIR_NAME = "ComfyUI-DICE"
TINY_CKPT_NAME = "dice_tiny_sd15.safetensors"
# Frontend settings for a test user: no first-run template browser, validation and missing-node checks on.
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.PromptFilename": False,
    "Comfy.Validation.Workflows": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 1,  # keep node text rendered in zoomed-out screenshots
}
START_TIMEOUT_S = float(os.environ.get("DICE_SERVER_START_TIMEOUT", "90"))


# ---- installing the pack ------------------------------------------------------------------------
def _comfyignore_patterns() -> list[str]:
    path = os.path.join(REPO, ".comfyignore")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """The gitignore subset .comfyignore uses: `name/` a folder anywhere, `/a/b` or `a/b` anchored at the
    root, globs allowed; a pattern matching a folder excludes everything in it."""
    parts = rel.split("/")
    for pat in patterns:
        is_dir = pat.endswith("/")
        p = pat.strip("/")
        if pat.startswith("/") or "/" in p:
            n = len(parts) - 1 if is_dir else len(parts)
            candidates = ["/".join(parts[: i + 1]) for i in range(n)]
        else:
            candidates = parts[:-1] if is_dir else parts
        if any(fnmatch.fnmatchcase(c, p) for c in candidates):
            return True
    return False


def pack_files() -> list[str]:
    """Files a user gets: tracked or untracked-but-not-gitignored, minus .comfyignore (like `comfy node publish`)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    patterns = _comfyignore_patterns()
    files = [f for f in out.split("\0") if f and os.path.isfile(os.path.join(REPO, f))]
    return sorted(f for f in files if not ignored(f, patterns))


def install_pack(custom_nodes: str) -> str:
    dest = os.path.join(custom_nodes, PACK_DIR_NAME)
    for rel in pack_files():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), target)
    return dest


# ---- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: str, checkpoint: str | None = None, extra_args: list[str] | None = None):
        self.base = os.path.abspath(base)
        self.checkpoint = checkpoint
        self.extra_args = extra_args or []
        self.port = None
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.base, "server.log")
        self.client_id = uuid.uuid4().hex

    # folders -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path(self, *parts: str) -> str:
        return os.path.join(self.base, *parts)

    def prepare(self) -> None:
        for d in ("custom_nodes", "models/checkpoints", "models/dice", "input", "output", "temp", "user"):
            os.makedirs(self.path(d), exist_ok=True)
        install_pack(self.path("custom_nodes"))
        os.makedirs(self.path("user", "default"), exist_ok=True)
        with open(self.path("user", "default", "comfy.settings.json"), "w", encoding="utf-8") as f:
            json.dump(FRONTEND_SETTINGS, f, indent=1)
        if self.checkpoint:
            link = self.path("models", "checkpoints", TINY_CKPT_NAME)
            if not os.path.exists(link):
                try:
                    os.link(self.checkpoint, link)
                except OSError:
                    os.symlink(self.checkpoint, link)

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> ComfyServer:
        self.prepare()
        comfy = harness.comfyui_path()
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("CUDA_VISIBLE_DEVICES", None)
        last_error = None
        for _ in range(3):  # a port picked free can be taken before the server binds it
            self.port = free_port()
            cmd = [
                sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", self.base, "--database-url", "sqlite:///:memory:", "--disable-auto-launch",
                *self.extra_args,
            ]
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(cmd, cwd=comfy, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            log.close()
            try:
                self._wait_ready()
                return self
            except RuntimeError as e:
                last_error = e
                self.stop()
                if "address already in use" not in self.log_tail().lower():
                    break
        raise last_error

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"ComfyUI did not answer /system_stats within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        """Everything the server printed so far."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 8000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # HTTP ----------------------------------------------------------------------------------------
    def get(self, route: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + route, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def post(self, route: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"POST {route} -> {e.code}: {e.read().decode('utf-8', 'replace')}") from None

    def queue(self, api_prompt: dict) -> str:
        return self.post("/prompt", {"prompt": api_prompt, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120) -> dict:
        """The /history entry once the prompt finished; raises with the server log on error or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{urllib.parse.quote(prompt_id)}")
            if prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") == "success":
                    return entry
                if status.get("status_str") == "error":
                    raise RuntimeError(f"prompt {prompt_id} failed: {json.dumps(status.get('messages'))[:4000]}\n"
                                       f"{self.log_tail()}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.25)
        try:
            self.post("/interrupt", {})
        except Exception:
            pass
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, api_prompt: dict, timeout: float = 120) -> dict:
        return self.wait(self.queue(api_prompt), timeout)
