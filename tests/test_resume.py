"""A search whose driver is SIGKILLed mid-run is finished by `orchestrator resume`."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.results import CorruptResults, load_results
from orchestrator.storage import Location
from orchestrator.study import study_trials
from orchestrator.wandb_files import logged_steps
from tests.conftest import DRIVER_MARK, kill_marked, search_command, short_tmpdir

pytestmark = pytest.mark.slow


def _completed(experiment: Path) -> list[dict]:
    try:  # the appended parts while the search runs, the compacted table after it
        trials = load_results(Location.parse(experiment))[0].to_pylist()
    except (OSError, ValueError, CorruptResults):
        return []
    return [t for t in trials if t["outcome"] == "completed"]


def test_resume_after_sigkill(local_ray, tmp_path, isolated_environment):
    storage, name = tmp_path / "store", "killed"
    experiment = storage / name
    ray_tmp = Path(short_tmpdir())
    args = search_command(
        "classic",
        name,
        storage,
        "--max-concurrent",
        "1",
        "--wandb-mode",
        "offline",
        "--num-cpus",
        "2",
        n=3,
        iterations=3,
    )
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), DRIVER_MARK: str(tmp_path)}
    log = open(tmp_path / "driver.log", "wb")  # noqa: SIM115 - closed with the driver
    driver = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not _completed(experiment):
            tail = (tmp_path / "driver.log").read_text()[-3000:]
            assert driver.poll() is None, f"the search ended before it could be killed:\n{tail}"
            time.sleep(1)
        before = {t["trial_id"]: t for t in _completed(experiment)}
        assert before, "no trial finished in time"
        assert len(before) < 3, "the search finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        kill_marked(str(tmp_path))

    result = CliRunner().invoke(cli, ["resume", name, "--storage", str(storage)])
    assert result.exit_code == 0, result.output
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    assert len(trials) == 3
    assert all(t["outcome"] == "completed" and t["iterations"] == 3 for t in trials), trials
    after = {t["trial_id"]: t for t in trials}
    for tid, trial in before.items():
        assert tid in after, "a trial finished before the kill is still there"
        assert after[tid]["last/val/acc"] == trial["last/val/acc"]
        assert after[tid]["config/lr"] == trial["config/lr"]
    history = pq.read_table(experiment / "history.parquet").to_pylist()
    assert len({(h["trial_id"], h["iteration"]) for h in history}) == 9 == len(history)
    # W&B: every iteration of every trial is in one of its run files (the resumed run logs
    # again what the killed driver's run never wrote), so a synced run has no gap.
    for tid in after:
        trial_dir = next(experiment.glob(f"*_{tid}"))
        assert sorted(logged_steps(trial_dir)) == [1, 2, 3], tid
    listing = CliRunner().invoke(cli, ["results", name, "--storage", str(storage), "--format", "json"])
    assert listing.exit_code == 0 and len(json.loads(listing.output)) == 3
    # The Optuna study in the experiment's SQLite file agrees: each trial once, finished.
    study = study_trials(f"sqlite:///{experiment / 'study.db'}", name)
    assert not [t for t in study if t["state"] == "RUNNING"], "no orphan RUNNING trial"
    live = [t for t in study if not t["orphaned"]]
    assert sorted(t["ray_trial_id"] for t in live) == sorted(after), "one study trial per Tune trial"
    assert all(t["state"] == "COMPLETE" for t in live)
    for t in live:
        assert t["params"]["lr"] == pytest.approx(after[t["ray_trial_id"]]["config/lr"])
        assert t["values"][0] == pytest.approx(after[t["ray_trial_id"]]["last/val/apgd_acc"])
