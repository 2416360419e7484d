#!/usr/bin/env bash
# `make test`: the whole suite on ComfyUI 0.3.75 (.venv) and on ComfyUI 0.33.0 (.venv033), one after
# the other, each printing its ComfyUI version (pytest's header) and its own summary; a final block
# repeats both summaries. Fails if either run fails.
# COMFYUI_PATH=/path/to/ComfyUI runs the suite once, on that checkout, with .venv's Python.
# Extra arguments go to pytest, e.g. scripts/run_tests.sh -m "not browser".
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if [ -n "${COMFYUI_PATH:-}" ]; then
  RUNS=("custom:.venv:$COMFYUI_PATH")
else
  RUNS=("0.3.75:.venv:$(pwd)/.venv/ComfyUI" "0.33.0:.venv033:$(pwd)/.venv033/ComfyUI")
fi

status=0
summaries=()
for run in "${RUNS[@]}"; do
  IFS=: read -r label venv comfy <<<"$run"
  log=$(mktemp)
  echo "=== ComfyUI $label: $comfy (python $venv/bin/python) ==="
  start=$(date +%s)
  COMFYUI_PATH="$comfy" "$venv/bin/python" -m pytest "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  took=$(( $(date +%s) - start ))
  summary=$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$' "$log" | tail -1)
  summaries+=("ComfyUI $label: ${summary:-no pytest summary} (rc $rc, ${took}s)")
  rm -f "$log"
  [ "$rc" -ne 0 ] && status=1
done

echo "=== summary ==="
printf '%s\n' "${summaries[@]}"
exit $status
