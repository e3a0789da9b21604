"""A search whose driver is SIGKILLed mid-run is finished by `orchestrator resume`: ASHA's rung
records survive (a trial that starts after the resume below the cut the killed driver's trials
recorded is stopped at the rung), finished trials stay as they were, and the history, the W&B
runs and the Optuna study hold every trial's every iteration once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from orchestrator.compat.wandb_files import logged_steps
from orchestrator.results import CorruptResults, ResultsStore, load_results
from orchestrator.storage import Location
from orchestrator.study import study_trials
from search_spaces import SPACES
from tests.conftest import DRIVER_MARK, kill_marked, short_tmpdir

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _reported(experiment: Path) -> dict[str, set[int]]:
    """trial id -> iterations in the history written so far."""
    try:
        _, history, _ = ResultsStore(Location.parse(str(experiment))).read()
    except (OSError, ValueError, CorruptResults):
        return {}
    out: dict[str, set[int]] = {}
    for row in history:
        out.setdefault(row["trial_id"], set()).add(int(row["iteration"]))
    return out


def test_rung_records_survive_a_sigkill_and_stop_a_later_trial(local_ray, tmp_path, monkeypatch):
    from orchestrator.resume import resume_search
    from tests import rung_toy
    from trainables import catalog

    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))
    monkeypatch.setitem(SPACES, rung_toy.NAME, rung_toy.register())
    storage, name = tmp_path / "store", "rungs"
    experiment = storage / name
    env = {
        **os.environ,
        "RAY_TMPDIR": short_tmpdir(),
        "ORCHESTRATOR_PARQUET_FLUSH_S": "0",
        DRIVER_MARK: str(tmp_path),
    }
    log = open(tmp_path / "driver.log", "wb")  # noqa: SIM115 - closed with the driver
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.rung_toy", str(storage), name],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Kill once the first two trials (scores 0.9 and 0.8) are recorded at rung 1.
        deadline = time.time() + 240
        while time.time() < deadline and sum(1 in its for its in _reported(experiment).values()) < 2:
            tail = (tmp_path / "driver.log").read_text()[-3000:]
            assert driver.poll() is None, f"the search ended before it could be killed:\n{tail}"
            time.sleep(0.3)
        before = _reported(experiment)
        assert len(before) == 2, f"not killed between the second and the fourth trial: {before}"
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        kill_marked(str(tmp_path))

    before_rows = {t["trial_id"]: t for t in load_results(Location.parse(experiment))[0].to_pylist()}
    resume_search(name, str(storage), echo=lambda line: None)
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    by_id = {t["trial_id"]: t for t in trials}
    kept = ("outcome", "iterations", "last/val/score", "config/score")
    for tid, row in before_rows.items():  # what had finished before the kill is unchanged
        if row["outcome"] in ("completed", "early_stopped"):
            assert {k: by_id[tid][k] for k in kept} == {k: row[k] for k in kept}, tid
    assert sorted(by_id[tid]["config/score"] for tid in before) == [0.8, 0.9]
    cut = float(np.percentile([0.8, 0.9], (1 - 1 / 3) * 100))  # ASHA's cut at rung 1 (eta 3)
    # (A trial the killed driver had just started, or had just told to stop, but that Ray Tune's
    # saved state did not hold yet is recorded interrupted and not run again; its searcher point
    # is gone with it, and what it reported before the kill stays in the history.)
    later = [t for t in trials if t["trial_id"] not in before and t["outcome"] != "interrupted"]
    # The 0.5 prior (maybe a sampled trial too) started after the kill below the cut of the killed
    # driver's records: an empty scheduler (what Ray Tune restores) would promote the first of
    # them; the rebuilt rung stops every one after one pass.
    assert any(t["config/score"] == 0.5 for t in later), later
    for t in later:
        expected = ("early_stopped", 1) if t["config/score"] < cut else ("completed", 3)
        assert (t["outcome"], t["iterations"]) == expected, t

    ran = {t["trial_id"]: t for t in trials if t["outcome"] != "interrupted"}
    history = pq.read_table(experiment / "history.parquet").to_pylist()
    rows = sorted((h["trial_id"], h["iteration"]) for h in history)
    assert [r for r in rows if r[0] in ran] == sorted(
        (tid, i) for tid, t in ran.items() for i in range(1, t["iterations"] + 1)
    ), "one history row per iteration, none lost, none twice"
    for tid, t in by_id.items():  # an interrupted trial keeps what it reported, once per iteration
        if tid not in ran:
            reported = [i for r, i in rows if r == tid]
            assert reported == list(range(1, len(reported) + 1)), (tid, rows)
            assert len(reported) >= t["iterations"], (tid, rows)
    assert {r for r, _ in rows} <= set(by_id), "a history row of a trial with no trial row"
    # W&B: every iteration of every trial that ran after the kill is in one of its run files (the
    # resumed run logs again what the killed driver's run never wrote), so a synced run has no
    # gap. (A trial that ended just before the kill may miss what its W&B actor had not written.)
    for tid, t in ran.items():
        if before_rows.get(tid, {}).get("outcome") in ("completed", "early_stopped"):
            continue
        assert sorted(logged_steps(next(experiment.glob(f"*_{tid}")))) == list(range(1, t["iterations"] + 1))
    # The Optuna study agrees: one finished study trial per Tune trial, no orphan left RUNNING;
    # a stopped trial is PRUNED with every value ASHA judged.
    study = study_trials(f"sqlite:///{experiment / 'study.db'}", name)
    assert not [s for s in study if s["state"] == "RUNNING"], study
    live = {s["ray_trial_id"]: s for s in study if not s["orphaned"] and s["ray_trial_id"] in ran}
    assert sorted(live) == sorted(ran)
    for tid, s in live.items():
        assert s["state"] == ("PRUNED" if ran[tid]["outcome"] == "early_stopped" else "COMPLETE"), s
        assert s["params"]["score"] == pytest.approx(ran[tid]["config/score"])
        reported = {h["iteration"]: h["val/score"] for h in history if h["trial_id"] == tid}
        assert s["intermediate"] == pytest.approx(reported), tid
