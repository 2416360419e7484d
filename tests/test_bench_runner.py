"""`make bench`'s runner (benchmarks/run_all.py): each section's figures and its wall time land in results.json, and
BENCHMARKS.md shows the wall times, so that what `make bench` costs is measured, not guessed.

    .venv/bin/python -m pytest tests/test_bench_runner.py
"""

from __future__ import annotations

import json
import sys

from benchmarks import run_all


def test_a_section_records_its_figures_and_wall_time(tmp_path, monkeypatch):
    results, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    # What an earlier run left: another section's figures (a key BENCHMARKS.md does not render) and its time must
    # survive an `--only` run.
    results.write_text(json.dumps({"cpu": {"earlier": {"figure": 1.0}, "section_seconds": {"earlier": 60.0}}}))
    monkeypatch.setattr(run_all, "RESULTS", str(results))
    monkeypatch.setattr(run_all, "BENCHMARKS_MD", str(markdown))
    # The section itself is replaced: the runner's bookkeeping is under test, not a study that takes an hour.
    monkeypatch.setattr(run_all, "toyworld2", lambda: {"skipped": "test"})
    monkeypatch.setattr(sys, "argv", ["run_all", "--only", "toyworld2"])
    run_all.main()
    cpu = json.loads(results.read_text())["cpu"]
    assert cpu["toyworld2"] == {"skipped": "test"}
    assert cpu["earlier"] == {"figure": 1.0}
    assert set(cpu["section_seconds"]) == {"earlier", "toyworld2"}
    assert cpu["section_seconds"]["earlier"] == 60.0
    assert 0.0 <= cpu["section_seconds"]["toyworld2"] < 60.0
    text = markdown.read_text()
    assert "| earlier | 1.0 |" in text
    assert "| toyworld2 |" in text
