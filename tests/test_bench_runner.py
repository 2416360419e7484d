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


def _record_calls(monkeypatch, tmp_path) -> list[str]:
    """Every section replaced by one that records its name: which sections a command runs is under test."""
    calls: list[str] = []
    monkeypatch.setattr(run_all, "RESULTS", str(tmp_path / "results.json"))
    monkeypatch.setattr(run_all, "BENCHMARKS_MD", str(tmp_path / "BENCHMARKS.md"))
    # BENCHMARKS.md needs real figures to render; the first test covers it.
    monkeypatch.setattr(run_all, "write_benchmarks_md", lambda results, path: None)
    for name in (*run_all.HEADLINE, *run_all.STUDIES):
        monkeypatch.setattr(run_all, name, lambda *args, name=name: calls.append(name) or {"skipped": "test"})
    return calls


def test_make_bench_runs_the_headline_and_restamps_the_cpu_date(tmp_path, monkeypatch):
    calls = _record_calls(monkeypatch, tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_all"])
    run_all.main()
    assert calls == list(run_all.HEADLINE)
    assert not set(run_all.STUDIES) & set(calls)
    cpu = json.loads((tmp_path / "results.json").read_text())["cpu"]
    assert "date" in cpu and "machine" in cpu


def test_bench_studies_runs_the_studies_and_leaves_the_cpu_date(tmp_path, monkeypatch):
    calls = _record_calls(monkeypatch, tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_all", "--studies"])
    run_all.main()
    assert calls == list(run_all.STUDIES)
    cpu = json.loads((tmp_path / "results.json").read_text())["cpu"]
    assert "date" not in cpu  # the studies carry their own dates
