# Every target sets up .venv/ first (idempotent), so each works from a fresh clone.
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: setup test demo bench lint quick-bench

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) benchmarks/run_all.py
