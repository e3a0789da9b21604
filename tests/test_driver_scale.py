"""benchmarks/driver_scale.py: its idle trainable, its bad input, and (slow) the driver's overhead
over plain Ray Tune on a small search, kept from regressing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "driver_scale.py"


def test_an_idle_trial_reports_its_curve_and_checkpoints_without_training():
    from benchmarks.idle_trainable import CHEAP, SPEC
    from trainables.reporting import MemoryReporter
    from trainables.trial import run_trial

    reporter = MemoryReporter()
    last = run_trial(SPEC, {**CHEAP, "iterations": 2, "seconds": 0.0, "x": 0.5, "y": 0.5}, reporter)
    assert [r["iteration"] for r in reporter.reports] == [1, 2]
    assert reporter.reports[0]["val/score"] < last["val/score"] == pytest.approx(0.5), "a rising curve"
    assert reporter.checkpoint is not None and "test/acc" in last


@pytest.mark.parametrize(
    "args,message",
    [(["--slots", "100000"], "free memory holds about"), (["--trials", "0"], "at least 1")],
)
def test_a_size_the_machine_cannot_hold_is_one_line_and_exit_2(args, message):
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1], done.stderr


@pytest.mark.slow
def test_the_drivers_overhead_over_plain_ray_tune_stays_bounded(tmp_path):
    """40 one-report trials, 8 at a time, through both sides (about a minute): the orchestrator's
    wall time at most OVERHEAD times plain Ray Tune + OptunaSearch's (measured 1.5x)."""
    out = tmp_path / "rows.jsonl"
    command = [sys.executable, str(SCRIPT), "--trials", "40", "--slots", "8", "--seconds", "0.2"]
    done = subprocess.run([*command, "--save", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = {r["side"]: r for r in map(json.loads, out.read_text().splitlines())}
    orchestrator, plain = rows["orchestrator"], rows["plain"]
    assert orchestrator["trials_done"] == 40 and orchestrator["errors"] == 0
    assert orchestrator["wall_s"] <= OVERHEAD * plain["wall_s"], (orchestrator, plain)
    # The readers answered on the finished experiment (resume: nothing left to run).
    readers = ("results", "report", "resume", "dashboard")
    assert all(orchestrator[f"{reader}_s"] is not None for reader in readers), orchestrator


#: The most the orchestrator's wall time may be over plain Ray Tune's on that small search.
OVERHEAD = 2.5
