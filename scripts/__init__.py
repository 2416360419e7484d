"""The project's scripts, run from the repo root as `python -m scripts.<name>` (make demo, make families)."""
