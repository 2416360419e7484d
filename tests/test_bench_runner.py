"""`make bench`'s runner (benchmarks/run_all.py): each section's figures and its wall time land in results.json, and
BENCHMARKS.md shows the wall times, so that what `make bench` costs is measured, not guessed.

    .venv/bin/python -m pytest tests/test_bench_runner.py
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from benchmarks import run_all
from dice_core.fileformat import load_refiner


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
    # a section that went on from checkpointed work reports that work's time, not the seconds of the join
    monkeypatch.setattr(run_all, "toyworld2", lambda: {"skipped": "test", "wall_seconds": 5400.0})
    run_all.main()
    assert json.loads(results.read_text())["cpu"]["section_seconds"]["toyworld2"] == 5400.0


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


def test_toyworld2_table_goes_on_only_from_work_of_the_same_settings_and_files(tmp_path):
    """The table checkpoints after each base model (about an hour of work each), and base models can be measured by
    two processes and joined. Earlier work must be used only where its settings and base files (sha256) are the
    same, and a base model measured with another choice than the validation's must not join the table."""
    from benchmarks import toyworld2_table
    from toyworld.train_base import _sha256

    base, second = tmp_path / "base.safetensors", tmp_path / "base_seed1.safetensors"
    base.write_bytes(b"weights of base seed 0")
    second.write_bytes(b"weights of base seed 1")
    settings = toyworld2_table.run_settings(argparse_namespace())
    chosen = {"candidate": "dice-pack:600", "strength": "1.25", "scale": 2.0, "extrapolation": 0.5}
    first_run, second_run = tmp_path / "partial.json", tmp_path / "second.json"
    first = {"file": base.name, "sha256": _sha256(str(base)), "seconds": 10.0}
    first_run.write_text(json.dumps({"settings": settings, "bases": [first], "validation": {"chosen": chosen}}))
    measured = {"file": second.name, "sha256": _sha256(str(second)), "seconds": 5.0, "chosen": chosen}
    second_run.write_text(json.dumps({"settings": settings, "bases": [measured]}))

    validation, finished = toyworld2_table.earlier_work([str(first_run), str(second_run)], settings)
    assert validation == {"chosen": chosen} and finished == {first["sha256"]: first, measured["sha256"]: measured}
    assert toyworld2_table.earlier_work([str(tmp_path / "none.json")], settings) == (None, {})
    other_seeds = toyworld2_table.run_settings(argparse_namespace(test_seeds=1))
    assert toyworld2_table.earlier_work([str(first_run)], other_seeds) == (None, {})
    # a base model measured with another choice than the validation's
    second_run.write_text(json.dumps({"settings": settings, "bases": [{**measured, "chosen": {**chosen, "scale": 3.0}}]}))
    with pytest.raises(SystemExit, match="validation chose"):
        toyworld2_table.earlier_work([str(first_run), str(second_run)], settings)
    second_run.write_text(json.dumps({"settings": settings, "bases": [measured]}))
    # both base models done: the joined table comes back without sampling anything, base seed 0 first
    argv = ["--bases", str(base), str(second), "--json", str(first_run), "--resume", "--earlier", str(second_run)]
    joined = toyworld2_table.main(argv)
    assert joined["bases"] == [first, measured] and joined["seconds"] == 15.0
    assert json.loads(first_run.read_text())["bases"] == [first, measured]
    # --chosen (a choice printed by a validation run) must be the validation's own, the extrapolation's K included
    assert toyworld2_table.main([*argv, "--chosen", "dice-pack:600", "1.25", "2", "0.5"])["bases"] == [first, measured]
    with pytest.raises(SystemExit):
        toyworld2_table.main([*argv, "--chosen", "dice-pack:600", "1.25", "2", "1"])
    # a retrained file (same name, other weights) is not taken for the measured one: this one would be sampled
    second.write_bytes(b"weights retrained")
    assert _sha256(str(second)) not in toyworld2_table.earlier_work([str(second_run)], settings)[1]


def argparse_namespace(**overrides):
    """toyworld2_table's parsed arguments at their defaults, with overrides."""
    import argparse

    from benchmarks import toyworld2_table

    defaults = {"candidates": list(toyworld2_table.CANDIDATES), "validation_seeds": 2, "test_seeds": 2,
                "refiner_seeds": list(toyworld2_table.REFINER_SEEDS), "refiner_captions": toyworld2_table.REFINER_CAPTIONS,
                "samples_per_prompt": toyworld2_table.SAMPLES_PER_PROMPT, "captions": 0}
    return argparse.Namespace(**{**defaults, **overrides})


def test_a_second_process_waits_for_the_validation_of_its_own_settings(tmp_path, monkeypatch):
    """`make bench` measures the second base model in another process, which waits for the first's validation: it
    must take only a validation of the same settings, and give up with an error rather than wait for ever."""
    from benchmarks import toyworld2_table

    monkeypatch.setattr(toyworld2_table, "POLL_SECONDS", 0.01)
    settings = toyworld2_table.run_settings(argparse_namespace())
    validation = {"chosen": {"candidate": "dice-pack:600", "strength": 2.0, "scale": 1.5}}
    first = tmp_path / "first.json"
    with pytest.raises(SystemExit, match="no validation of these settings"):  # not written yet
        toyworld2_table.wait_for_validation(str(first), settings, minutes=0.001)
    first.write_text(json.dumps({"settings": toyworld2_table.run_settings(argparse_namespace(test_seeds=1)),
                                 "bases": [], "validation": validation}))
    with pytest.raises(SystemExit, match="no validation of these settings"):  # another run's
        toyworld2_table.wait_for_validation(str(first), settings, minutes=0.001)
    first.write_text(json.dumps({"settings": settings, "bases": []}))
    with pytest.raises(SystemExit, match="no validation of these settings"):  # the same run, still validating
        toyworld2_table.wait_for_validation(str(first), settings, minutes=0.001)
    first.write_text(json.dumps({"settings": settings, "bases": [], "validation": validation}))
    assert toyworld2_table.wait_for_validation(str(first), settings, minutes=0.001) == validation


def test_make_bench_gives_each_world2_base_model_a_process(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "TOYWORLD2_WORK", str(tmp_path))
    first, second = run_all.toyworld2_commands(["b0.safetensors", "b1.safetensors"], "r.safetensors")
    first_json = first[first.index("--json") + 1]
    assert first[:2] == ["--bases", "b0.safetensors"] and "--resume" in first and "--choice-from" not in first
    assert second[:2] == ["--bases", "b1.safetensors"] and "--resume" in second
    assert second[second.index("--choice-from") + 1] == first_json != second[second.index("--json") + 1]
    # the rows beyond the teacher's settings are measured once, by the process that would otherwise wait
    assert first[first.index("--settings-rows") + 1] == "none" and second[second.index("--settings-rows") + 1] == "here"
    # the validating process ships its first refiner, and no other process writes that file
    assert first[first.index("--ship-refiner") + 1] == "r.safetensors" and "--ship-refiner" not in second
    (alone,) = run_all.toyworld2_commands(["b0.safetensors"], "r.safetensors")
    assert alone[alone.index("--settings-rows") + 1] == "validation"


def test_one_failed_process_stops_the_others(tmp_path):
    """A process waiting for a validation that failed would wait for hours: the runner stops it and says which
    command failed."""
    pid_file = tmp_path / "pid"
    sleeper = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(600)"
    failing = f"import pathlib, sys, time\nwhile not pathlib.Path({str(pid_file)!r}).exists(): time.sleep(0.05)\nsys.exit(3)"
    with pytest.raises(RuntimeError, match="exit code 3"):
        run_all.run_side_by_side([["-c", sleeper, "--json", "a"], ["-c", failing, "--json", "b"]])
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left sleeping
        os.kill(int(pid_file.read_text()), 0)
    assert run_all.run_side_by_side([["-c", "pass", "--json", str(tmp_path / "a.json")]]) == [str(tmp_path / "a.json")]


def test_a_study_recorded_before_it_carried_its_date_keeps_the_date_it_was_measured_on(tmp_path, monkeypatch):
    """Toy world 1's table moved from make bench to the studies, which carry their own dates: its recorded figures
    were measured under the CPU section's date, and a restamp of that date by make bench must not re-date them."""
    calls = _record_calls(monkeypatch, tmp_path)
    machine = {"cpus": 2}
    (tmp_path / "results.json").write_text(json.dumps(
        {"cpu": {"date": "2026-01-01", "machine": machine, "toyworld": {"summary": {}},
                 "padding": {"rows": 1, "date": "2026-02-02"}}}))
    monkeypatch.setattr(sys, "argv", ["run_all", "--only", "sampling"])
    run_all.main()
    cpu = json.loads((tmp_path / "results.json").read_text())["cpu"]
    assert calls == ["sampling"] and cpu["date"] != "2026-01-01"
    assert cpu["toyworld"] == {"summary": {}, "date": "2026-01-01", "machine": machine}
    assert cpu["padding"]["date"] == "2026-02-02"


def test_the_toyworld2_section_end_to_end_on_the_shipped_base_models_shrunk(tmp_path, monkeypatch):
    """make bench's toyworld2 section as it runs, two processes on the shipped base models, shrunk to a few captions
    and refiner steps (about a minute): the plumbing a 75-minute run depends on. The second process takes the first's
    choice, measures the rows beyond the teacher's settings, and the joined table holds both base models."""
    from dice_testkit import harness
    from toyworld import comfy_objects
    from toyworld.train_base import _sha256

    harness.setup_comfy()
    from benchmarks import toyworld2_table

    bases = comfy_objects.world2_base_paths()
    if len(bases) < 2:
        pytest.skip("needs both shipped world-2 base models")
    monkeypatch.setattr(run_all, "TOYWORLD2_WORK", str(tmp_path))
    tiny = ("--captions", "3", "--candidates", "dice-pack:4", "--refiner-captions", "4", "--samples-per-prompt", "1",
            "--validation-seeds", "1", "--test-seeds", "1")
    shipped = tmp_path / "refiner.safetensors"
    section = run_all.toyworld2(table_args=tiny, ship_refiner=str(shipped))
    first, second = section["bases"]
    assert [first["file"], second["file"]] == [os.path.basename(b) for b in bases]
    chosen = section["validation"]["chosen"]
    assert first["chosen"] == second["chosen"] == chosen and chosen["candidate"] == "dice-pack:4"
    assert section["validation"]["base_sha256"] == first["sha256"]
    assert first["settings_rows"] == [] and len(second["settings_rows"]) == 3
    assert set(second["methods"]) == set(first["methods"]) and len(first["methods"]) == 7
    # the training-free baseline beside scaling: K chosen on validation among EXTRAPOLATIONS, sampled on the test split
    assert list(section["validation"]["extrapolation"]) == [f"{k:g}" for k in toyworld2_table.EXTRAPOLATIONS]
    assert chosen["extrapolation"] in toyworld2_table.EXTRAPOLATIONS
    assert toyworld2_table.extrapolation_label(chosen["extrapolation"]) in first["methods"]
    assert set(first["recovery"]) == set(second["recovery"]) == {"0", "1"}
    # a teacher match for every method but the two it is measured between, and for each refiner seed and settings row
    assert [name for name, row in first["methods"].items() if "teacher_match" not in row] == ["cfg1", "cfg3"]
    for row in [*first["recovery"].values(), *first["methods"].values(), *second["settings_rows"]]:
        if "teacher_match" in row:
            low, high = row.get("teacher_match_ci95", (row["teacher_match"],) * 2)
            assert low <= high and row["teacher_match"] < 1  # a finite number, and no method is the teacher itself
    # the second process validated nothing: its part holds the first's validation, taken as it was
    part = json.loads((tmp_path / "toyworld2_base1.json").read_text())
    assert part["validation"] == section["validation"]
    assert section["wall_seconds"] >= max(first["seconds"], second["seconds"])
    # the refiner the first base model's figures were measured with, recorded by its sha256, trained for that model
    assert first["shipped_refiner"] == {"file": shipped.name, "refiner_seed": 0, "sha256": _sha256(str(shipped))}
    assert "shipped_refiner" not in second
    bundle = load_refiner(str(shipped))
    assert bundle.train_step == 4 and bundle.trained_guidance == toyworld2_table.TEACHER_W
    assert section["validation_pairs"] == section["test_pairs"] == 3


def test_the_speed_sections_time_every_core(monkeypatch):
    """make bench runs its sections one after another, so each speed section has the machine to itself and times
    every core, as the figures on record do, even though the Makefile sets one thread for the tests."""
    from benchmarks import common

    seen: list[int | None] = []

    def child_records(module, args, timeout=1800, threads=None):
        seen.append(threads)
        return [{"mode": mode, "s_per_step": 1.0, "peak_rss_mb": 1.0, "rss_before_loop_mb": 1.0} for mode in ("node", "reference")]

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(common, "run_child_all", child_records)
    monkeypatch.setattr(common, "run_child", lambda *args, **kwargs: child_records(*args, **kwargs)[-1])
    run_all.sampling("cpu")
    run_all.training("cpu")
    run_all.cost_curve("cpu")
    assert len(seen) == 3 + 3 + 6 and set(seen) == {os.cpu_count()}


def test_world2_candidates_name_their_steps_stages_and_batch():
    from benchmarks import toyworld2_table

    assert toyworld2_table.parse_candidate("dice-pack:600") == ("dice-pack", 600, "", toyworld2_table.BATCH_SIZE)
    assert toyworld2_table.parse_candidate("dice-pack:1200:b16") == ("dice-pack", 1200, "", 16)
    assert toyworld2_table.parse_candidate("paper:600:0.08/0.24/0.5:b8") == ("paper", 600, "0.08, 0.24, 0.5", 8)


def test_the_world2_recipe_study_trains_with_the_node_and_scores_validation(tmp_path):
    """benchmarks/toyworld2_recipes.py, shrunk: a refiner of the asked recipe (refiner seed, loss and rate too), scored
    at each strength (or strength schedule) on validation, with recovery against cfg 1 and the teacher on the same
    captions; the refiner it saves scores the same when given back with --refiner, which trains nothing; other noise
    seeds get their own references, an interval and a teacher match, also for several refiners scored against one set
    of references; and the training-free extrapolation rows are scored alone against the same references."""
    import math

    from dice_testkit import harness

    harness.setup_comfy()
    from benchmarks import toyworld2_recipes, toyworld2_table

    out, saved = tmp_path / "recipe.json", tmp_path / "refiner.safetensors"
    shrunk = ["--strengths", "1", "1>2@0.3", "--validation-captions", "2"]
    result = toyworld2_recipes.main(["--steps", "3", "--batch", "4", "--captions", "2", "--samples-per-prompt", "1",
                                     "--seed", "1", "--loss", "l2", "--lr", "0.001", *shrunk, "--save", str(saved),
                                     "--json", str(out)])
    from dice_core.fileformat import load_refiner

    recorded = load_refiner(str(saved)).recipe  # the refiner seed, loss and rate asked for, as the node recorded them
    assert (recorded["seed"], recorded["loss"], recorded["lr"]) == (1, "l2", 0.001)
    written = json.loads(out.read_text())  # compared by accuracy: a 2-caption check has no Fréchet distance (nan)
    assert {k: v["accuracy"] for k, v in written["scores"].items()} == {k: v["accuracy"] for k, v in result["scores"].items()}
    assert set(result["scores"]) == {"1", "1>2@0.3"} and written["settings"]["steps"] == 3 and result["train_s"] > 0
    # 2 captions are not the table's validation: its references are measured on them, not read from results.json
    reference = result["references"]
    assert set(reference) == {"cfg1", "cfg_w"}
    for row in result["scores"].values():  # the same expression on the same floats: equal (or both nan), not close
        expected = toyworld2_table.recovery(row["accuracy"], reference["cfg1"], reference["cfg_w"])
        assert row["recovery"] == expected or (math.isnan(row["recovery"]) and math.isnan(expected))
    again = toyworld2_recipes.main(["--refiner", str(saved), *shrunk])
    assert again["train_s"] is None
    assert {k: v["accuracy"] for k, v in again["scores"].items()} == {k: v["accuracy"] for k, v in result["scores"].items()}
    # fresh noise seeds score a setting anew: their own references, and each recovery with its interval
    fresh = toyworld2_recipes.main(["--refiner", str(saved), *shrunk, "--noise-seeds", "2", "3"])
    assert fresh["settings"]["noise_seeds"] == [2, 3] and set(fresh["references"]) == {"cfg1", "cfg_w"}
    for row in fresh["scores"].values():
        low, high = row["recovery_ci95"]
        assert low <= high
        low, high = row["teacher_match_ci95"]  # paired with the references' latents: a number, below the teacher's 1
        assert low <= high and row["teacher_match"] < 1
    # several refiners against the same references: each score named FILE|STRENGTH, each the same as scored alone
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(saved.read_bytes())
    both = toyworld2_recipes.main(["--refiner", str(saved), str(copy), *shrunk, "--noise-seeds", "2", "3"])
    assert both["references"] == fresh["references"]
    for path in (saved, copy):
        assert {k: both["scores"][f"{path}|{k}"]["teacher_match"] for k in fresh["scores"]} == \
            {k: v["teacher_match"] for k, v in fresh["scores"].items()}
    with pytest.raises(SystemExit):
        toyworld2_recipes.main(["--refiner", str(saved), "--save", str(copy)])
    # the training-free extrapolation rows, alone: K 0 is the prompt itself, so its images are cfg 1's to the bit
    # (teacher match exactly 0, accuracy cfg 1's), and K 1 is a method of its own
    baseline = toyworld2_recipes.main(["--extrapolation-only", "--extrapolate", "0", "1", *shrunk, "--noise-seeds", "2", "3"])
    assert baseline["train_s"] is None and set(baseline["scores"]) == {"extrapolate 0", "extrapolate 1"}
    assert baseline["references"] == fresh["references"]
    assert baseline["scores"]["extrapolate 0"]["teacher_match"] == 0.0
    assert baseline["scores"]["extrapolate 0"]["accuracy"] == baseline["references"]["cfg1"]
    for bad in (["--extrapolation-only"], ["--extrapolation-only", "--extrapolate", "1", "--refiner", str(saved)]):
        with pytest.raises(SystemExit):
            toyworld2_recipes.main(bad)


def test_retraining_the_shipped_world2_refiner_is_bit_reproducible_on_one_machine(tmp_path):
    """benchmarks/toyworld2_reproduce, shrunk: the table's settings, but 3 steps on 4 captions. Trained twice on this
    machine the refiner is the same bit for bit, and against another file (the shipped one, 1200 steps) the comparison
    reports the difference rather than passing."""
    from benchmarks import toyworld2_reproduce
    from toyworld import comfy_objects

    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    shrunk = ["--steps", "3", "--captions", "4"]
    other = toyworld2_reproduce.main([*shrunk, "--save", str(first), "--against", comfy_objects.WORLD2_REFINER_PATH])
    assert other["same_names"] and not other["bit_equal"] and other["max_abs_difference"] > 0
    again = toyworld2_reproduce.main([*shrunk, "--save", str(second), "--against", str(first)])
    assert again["bit_equal"] and again["max_abs_difference"] == 0.0 and again["candidate"].split(":")[1] == "3"
    with pytest.raises(SystemExit):
        toyworld2_reproduce.main(shrunk)  # a shrunk refiner compared with the shipped one would mean nothing


def test_extrapolation_pushes_each_prompt_away_from_the_empty_prompt():
    """toyworld2_table.extrapolation: c + k (c - uc) on every entry, the entry's other values kept (a new dict), and
    a prompt of another shape than uc refused with a sentence rather than broadcast."""
    import torch

    from benchmarks.toyworld2_table import extrapolation

    c, uc = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]]), torch.tensor([[[1.0, 0.0], [-1.0, 1.0]]])
    extras = {"pooled_output": None, "start_percent": 0.3}
    (refined, kept), = extrapolation(2.0, uc)([[c, extras]])
    assert refined.tolist() == [[[1.0, 6.0], [11.0, 13.0]]]  # small integers: exact in float32
    assert kept == extras and kept is not extras
    with pytest.raises(ValueError, match="one shape"):
        extrapolation(1.0, uc)([[torch.zeros(1, 3, 2), {}]])


def test_teacher_match_is_0_for_cfg1_1_for_the_teacher_and_the_distance_ratio_between():
    """toyworld2_table.teacher_match on made-up latents: the teacher's own latents score 1, cfg 1's 0, and the
    midpoint of the two, a quarter of cfg 1's squared distance, 0.75 (every caption alike, so its interval is that
    point too); twice past the teacher, four times cfg 1's squared distance, -3: overshooting is not rewarded."""
    import torch

    from benchmarks.toyworld2_table import teacher_match

    g = torch.Generator().manual_seed(0)
    shape = (6, 2)  # captions, seeds
    teacher, cfg1 = torch.randn(12, 4, 3, 3, generator=g), torch.randn(12, 4, 3, 3, generator=g)
    # each score is 1 - a ratio of float32 means of about 36 squares: a few ulps of 1, far inside 1e-5
    assert abs(teacher_match(teacher, cfg1, teacher, shape)[0] - 1) < 1e-5
    assert abs(teacher_match(cfg1, cfg1, teacher, shape)[0]) < 1e-5
    midpoint, interval = teacher_match((teacher + cfg1) / 2, cfg1, teacher, shape)
    assert abs(midpoint - 0.75) < 1e-5 and interval[0] <= 0.75 + 1e-5 and interval[1] >= 0.75 - 1e-5
    overshoot = teacher + 2 * (teacher - cfg1)  # twice as far past the teacher: 1 - 4
    assert abs(teacher_match(overshoot, cfg1, teacher, shape)[0] + 3) < 1e-5


def test_the_world2_table_can_stop_after_its_validation_and_scores_every_strength_and_schedule(tmp_path):
    """toyworld2_table --validation-only, shrunk: the candidates and STRENGTHS (strength schedules included) scored on
    validation and the choice written, and no test caption sampled (the result has no base model)."""
    from dice_testkit import harness
    from toyworld import comfy_objects

    harness.setup_comfy()
    from benchmarks import toyworld2_table

    out = tmp_path / "validation.json"
    result = toyworld2_table.main(["--bases", comfy_objects.world2_base_paths()[0], "--captions", "2", "--candidates",
                                   "dice-pack:3:b4", "--refiner-captions", "2", "--samples-per-prompt", "1",
                                   "--validation-seeds", "1", "--validation-only", "--json", str(out)])
    validation = result["validation"]
    assert list(validation["dice"]) == [f"dice-pack:3:b4 at {s}" for s in toyworld2_table.STRENGTHS]
    assert any(">" in s for s in toyworld2_table.STRENGTHS)  # a schedule is among the choices
    assert validation["chosen"]["strength"] in toyworld2_table.STRENGTHS and result["bases"] == []
    assert json.loads(out.read_text())["validation"] == validation


def test_the_base_step_speed_benchmark_times_each_variant_of_train_base2s_step():
    """benchmarks/base_step_speed, shrunk to batch 2 and one timed step: each variant trains (finite losses) and
    is timed, in the order asked, at the threads asked (this process's, so that the suite's threads are unchanged)."""
    import torch

    from benchmarks import base_step_speed

    threads = torch.get_num_threads()
    rows = base_step_speed.main(["--variants", "eager", "channels_last", "sdpa_math", "--batch", "2", "--warmup", "1",
                                 "--steps", "1", "--threads", str(threads)])
    assert [r["variant"] for r in rows] == ["eager", "channels_last", "sdpa_math"]
    assert all(r["losses_finite"] and r["s_per_step"] > 0 and r["threads"] == threads for r in rows)
