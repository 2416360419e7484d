"""DICE proven in the toy world, CI-sized: python -m benchmarks.toyworld_table --quick on the shipped base model.

The refiner is trained by the DICE Train Refiner node's own code on the 54 training captions and
evaluated on the 18 held-out combinations. Margins were chosen from measured quick runs (see the
closing note and BENCHMARKS.md); the full-size run is `make bench`.
"""

import json
import os
import subprocess
import sys

import pytest

from dice_testkit import harness

pytestmark = pytest.mark.slow
# A measured quick run (108 pairs): cfg=1 0.296, cfg=5 0.852, DICE 0.750, a gain of 0.454 and a recovery
# of 0.82. One evaluation's standard error is about 0.045, so these margins fail only on a real regression.
MIN_GAIN_OVER_CFG1 = 0.25
MIN_RECOVERY = 0.5


def test_quick_toyworld_table_shows_a_clear_dice_gain(tmp_path):
    out = tmp_path / "quick.json"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.toyworld_table", "--quick", "--json", str(out)],
        # Measured 897 s on this project's 2-core machine with the other runtime's suite on the other core
        # (single-threaded, as every test here); the limit only catches a hang.
        capture_output=True, text=True, timeout=2400, env=env, cwd=harness.REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["methods"]}
    cfg1, cfg5, dice = rows["cfg=1"], rows["cfg=5 (teacher)"], rows["DICE cfg=1 (seed 0)"]
    print(proc.stdout[-2500:])
    # DICE keeps cfg=1's cost: half the rows through the UNet of cfg=5.
    assert dice["nfe"] == cfg1["nfe"] == cfg5["nfe"] / 2
    assert cfg5["all"] > cfg1["all"] + 0.2, "the base model must need CFG for this test to mean anything"
    assert dice["all"] >= cfg1["all"] + MIN_GAIN_OVER_CFG1
    assert dice["recovery"] >= MIN_RECOVERY
    assert dice["mse_to_cfg5"] < cfg1["mse_to_cfg5"]
