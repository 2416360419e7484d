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


def test_toyworld2_table_resumes_only_a_run_of_the_same_settings_and_files(tmp_path):
    """The table checkpoints after each base model (about an hour of work each); --resume must go on from a
    checkpoint of the same settings and base files, and must not reuse one made with other settings or weights."""
    from benchmarks import toyworld2_table
    from toyworld.train_base import _sha256

    base, second = tmp_path / "base.safetensors", tmp_path / "base_seed1.safetensors"
    base.write_bytes(b"weights of base seed 0")
    second.write_bytes(b"weights of base seed 1")
    settings = toyworld2_table.run_settings(argparse_namespace())
    checkpoint = tmp_path / "partial.json"
    done = {"settings": settings, "bases": [{"file": base.name, "sha256": _sha256(str(base))}],
            "validation": {"chosen": {}}, "seconds": 10.0}
    checkpoint.write_text(json.dumps(done))
    # the first base model is done: a run over both goes on with the second
    assert toyworld2_table.resumable(str(checkpoint), settings, [str(base), str(second)]) == done
    assert toyworld2_table.resumable(str(checkpoint), settings, [str(base)]) == done
    assert toyworld2_table.resumable(str(tmp_path / "none.json"), settings, [str(base)]) is None
    other_seeds = toyworld2_table.run_settings(argparse_namespace(test_seeds=1))
    assert toyworld2_table.resumable(str(checkpoint), other_seeds, [str(base)]) is None
    assert toyworld2_table.resumable(str(checkpoint), settings, [str(second), str(base)]) is None  # another order
    base.write_bytes(b"weights retrained")  # the same name, other weights
    assert toyworld2_table.resumable(str(checkpoint), settings, [str(base)]) is None
    # every base model finished: a resumed run returns the checkpoint's result without sampling anything
    base.write_bytes(b"weights of base seed 0")
    argv = ["--bases", str(base), "--json", str(checkpoint), "--resume"]
    assert toyworld2_table.main(argv)["bases"] == done["bases"]


def argparse_namespace(**overrides):
    """toyworld2_table's parsed arguments at their defaults, with overrides."""
    import argparse

    from benchmarks import toyworld2_table

    defaults = {"candidates": list(toyworld2_table.CANDIDATES), "validation_seeds": 2, "test_seeds": 2,
                "refiner_seeds": list(toyworld2_table.REFINER_SEEDS), "refiner_captions": toyworld2_table.REFINER_CAPTIONS,
                "samples_per_prompt": toyworld2_table.SAMPLES_PER_PROMPT, "captions": 0}
    return argparse.Namespace(**{**defaults, **overrides})
