# Every target sets up the venvs it needs first (idempotent), so each works from a fresh clone.
# .venv/ holds ComfyUI 0.3.75, .venv033/ ComfyUI 0.33.0 (scripts/setup_env.sh).
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: setup test families demo bench bench-studies lint

setup:
	@bash scripts/setup_env.sh all

# The whole suite on both runtimes; PYTEST_ARGS passes options through, e.g. PYTEST_ARGS='-m "not browser"'.
test: setup
	bash scripts/run_tests.sh $(PYTEST_ARGS)

# Only the model-family tests (one module per family, tests/test_family_*.py) on both runtimes, then the
# README's family table rebuilt from what they recorded.
families: setup
	bash scripts/run_tests.sh -m families $(PYTEST_ARGS)
	$(PY) -m scripts.family_table

lint:
	@bash scripts/setup_env.sh 0.3.75
	$(PY) -m ruff check .

demo:
	@bash scripts/setup_env.sh 0.3.75
	$(PY) -m scripts.demo

# The headline (toy world 2) and the speed figures; bench-studies reruns the long studies (toy world 1, controls, stages).
bench:
	@bash scripts/setup_env.sh 0.3.75
	$(PY) -m benchmarks.run_all

bench-studies:
	@bash scripts/setup_env.sh 0.3.75
	$(PY) -m benchmarks.run_all --studies
