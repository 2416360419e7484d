#!/usr/bin/env bash
# `make test`: the whole suite on ComfyUI 0.3.75 (.venv) and on ComfyUI 0.33.0 (.venv033). Each run
# prints its ComfyUI version (pytest's header) and its own summary; a final block repeats both
# summaries. Fails if either run fails.
# The two runs go side by side, one per core: every test is single-threaded (OMP_NUM_THREADS=1), so
# on 2 cores this halves the wall time. Each run's output is printed whole when it ends.
# DICE_TEST_SERIAL=1 runs them one after the other, with live output.
# COMFYUI_PATH=/path/to/ComfyUI runs the suite once, on that checkout, with .venv's Python.
# Extra arguments go to pytest, e.g. scripts/run_tests.sh -m "not browser".
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ROOT=$(pwd)

if [ -n "${COMFYUI_PATH:-}" ]; then
  RUNS=("custom:.venv:$COMFYUI_PATH")
else
  RUNS=("0.3.75:.venv:$ROOT/.venv/ComfyUI" "0.33.0:.venv033:$ROOT/.venv033/ComfyUI")
fi
LOGS=$(mktemp -d)
started=$(date +%s)

run_one() {  # run_one LABEL VENV COMFY [pytest args]: writes LOGS/LABEL.log and LOGS/LABEL.rc
  local label=$1 venv=$2 comfy=$3 start rc
  shift 3
  start=$(date +%s)
  COMFYUI_PATH="$comfy" "$venv/bin/python" -m pytest "$@" >"$LOGS/$label.log" 2>&1
  rc=$?
  echo "$rc $(( $(date +%s) - start ))" >"$LOGS/$label.rc"
}

pids=()
for run in "${RUNS[@]}"; do
  IFS=: read -r label venv comfy <<<"$run"
  if [ "${DICE_TEST_SERIAL:-0}" = "1" ] || [ "${#RUNS[@]}" -eq 1 ]; then
    echo "=== ComfyUI $label: $comfy ($venv/bin/python) ==="
    run_one "$label" "$venv" "$comfy" "$@"
    cat "$LOGS/$label.log"
  else
    echo "=== ComfyUI $label: $comfy ($venv/bin/python), started in parallel ==="
    run_one "$label" "$venv" "$comfy" "$@" &
    pids+=($!)
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
if [ "${#pids[@]}" -gt 0 ]; then
  for run in "${RUNS[@]}"; do
    IFS=: read -r label _ _ <<<"$run"
    echo "=== ComfyUI $label: output ==="
    cat "$LOGS/$label.log"
  done
fi

status=0
echo "=== summary ($(( $(date +%s) - started )) s in all) ==="
for run in "${RUNS[@]}"; do
  IFS=: read -r label _ _ <<<"$run"
  read -r rc took <"$LOGS/$label.rc"
  summary=$(grep -E '(passed|failed|errors?|skipped|deselected|no tests ran).* in [0-9.]+s' "$LOGS/$label.log" | tail -1 | sed -E 's/^=+ //; s/ =+$//')
  echo "ComfyUI $label: ${summary:-no pytest summary} (rc $rc, ${took} s)"
  [ "$rc" -ne 0 ] && status=1
done
rm -rf "$LOGS"
exit $status
