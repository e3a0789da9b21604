"""Faults in real searches: SIGTERM (as timeout, SLURM and Kubernetes send it) and a second
driver, a damaged Ray Tune state, a damaged checkpoint, a disk that fills up, damaged Parquet, a
wrong --address, W&B under load."""

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.export import checkpoint_location
from orchestrator.results import CorruptResults, load_results
from orchestrator.storage import Location
from tests.conftest import (
    DRIVER_MARK,
    kill_marked,
    marked_processes,
    search_command,
    short_tmpdir,
    tiny_trial_config,
    tracebacks,
)
from tests.test_faults import _listener
from tests.wandb_records import summarize
from trainables.reporting import load_checkpoint_file

pytestmark = pytest.mark.slow


def _rows(experiment: Path) -> list[dict]:
    try:
        return load_results(Location.parse(experiment))[0].to_pylist()
    except (OSError, ValueError, CorruptResults):
        return []


def _history(experiment: Path) -> dict[tuple[str, int], dict]:
    history = load_results(Location.parse(experiment))[1].to_pylist()
    return {(h["trial_id"], h["iteration"]): h for h in history}


def _wandb_steps(trial_dir: Path) -> list[int]:
    steps = []
    for run in sorted(trial_dir.glob("wandb/offline-run-*/*.wandb")):
        steps += [int(h["iteration"]) for h in summarize(run)["history"]]
    return steps


def test_sigterm_interrupts_a_second_driver_is_refused_and_resume_continues(local_ray, tmp_path):
    """While the search runs, a second driver on it is refused (exit 2, nothing touched). SIGTERM
    as `timeout` sends it (to the driver and its process group; SLURM, Kubernetes and systemd
    send it too), handled as Ctrl-C is (tests/test_faults.py checks both signals reach the same
    handler): exit 143 in seconds, trials `interrupted` (W&B has their last iteration), no
    process left. A damaged Ray Tune state: resume stops with one line and runs nothing. Then
    resume continues every trial, one of them from the checkpoint before its damaged latest."""
    storage, name = tmp_path / "store", "sigterm"
    experiment = storage / name
    budget = 6
    args = search_command(
        "classic",
        name,
        storage,
        "--max-concurrent",
        "2",
        "--wandb-mode",
        "offline",
        "--num-cpus",
        "2",
        n=2,
        iterations=budget,
    )
    env = {
        **os.environ,
        "RAY_TMPDIR": short_tmpdir(),
        "ORCHESTRATOR_PARQUET_FLUSH_S": "0",
        DRIVER_MARK: str(tmp_path),
    }
    log_path = tmp_path / "driver.log"
    with open(log_path, "wb") as log:
        driver = subprocess.Popen(
            ["timeout", "-s", "TERM", "900", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 240
            while time.time() < deadline:
                rows = _rows(experiment)
                if len(rows) == 2 and all(2 <= r["iterations"] < budget for r in rows):
                    break
                assert driver.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.5)
            else:
                pytest.fail("the trials did not reach iteration 2 in time")
            before_refusals = {p: p.read_bytes() for p in experiment.glob("*.parquet")}
            for second in (["resume", name], ["resume", name, "--fresh"]):
                refused = CliRunner().invoke(cli, [*second, "--storage", str(storage)])
                assert refused.exit_code == 2, refused.output
                assert f"in use by orchestrator search {name}" in refused.output
            assert all(p.read_bytes() == data for p, data in before_refusals.items())
            # timeout forwards a SIGTERM it receives to the search and its process group, as it
            # does when its time is up
            driver.send_signal(signal.SIGTERM)
            start = time.monotonic()
            code = driver.wait(120)
            took = time.monotonic() - start
            left = _left_behind(tmp_path)
        finally:
            kill_marked(str(tmp_path))
    output = log_path.read_text()
    assert code == 143, output[-3000:]
    assert "interrupted by SIGTERM: 2 unfinished trial(s) recorded as interrupted" in output
    assert "SIGTERM received" not in output, "Ray's abort on SIGTERM"
    assert took < 45, f"took {took:.0f} s to stop"
    assert f"continue with `orchestrator resume {name}`" in output
    assert "Tuner.restore" not in output and not tracebacks(output), output[-3000:]
    assert not left, f"processes outlived the search: {left}"
    # Ray's line per checkpoint stays out of the terminal, in each trial's own log.
    assert "Checkpoint successfully created" not in output
    for log in [next(experiment.glob(f"*_{r['trial_id']}")) / "ray-trial.log" for r in _rows(experiment)]:
        assert "Checkpoint successfully created at" in log.read_text()
    rows = _rows(experiment)
    assert {r["outcome"] for r in rows} == {"interrupted"}, rows
    before = _history(experiment)
    for row in rows:  # W&B got every iteration Parquet has, the last one included
        trial_dir = next(experiment.glob(f"*_{row['trial_id']}"))
        assert _wandb_steps(trial_dir) == list(range(1, row["iterations"] + 1))

    # SIGHUP (a closed terminal, a dropped SSH session) stops a resumed driver as SIGTERM does
    # (on a copy: the steps below start from the SIGTERM's state).
    shutil.copytree(experiment, tmp_path / "hangup" / name)
    _hang_up_a_resumed_driver(tmp_path / "hangup", name, env, tmp_path, before)

    # The interrupted experiment is copied elsewhere (cp -r) and everything below happens to the
    # copy, whose Ray Tune pickles still name the original: the original is never touched.
    original = experiment
    untouched = {p: p.read_bytes() for p in original.rglob("*") if p.is_file()}
    storage = tmp_path / "elsewhere"
    experiment = storage / name
    shutil.copytree(original, experiment)

    # A damaged Ray Tune state: one line, exit 1, nothing run, nothing started over.
    state = next(experiment.glob("searcher-state-*.pkl"))
    saved = state.read_bytes()
    state.write_bytes(b"")
    failed = CliRunner().invoke(cli, ["resume", name, "--storage", str(storage)])
    assert failed.exit_code == 1, failed.output
    assert "cannot restore Ray Tune's state" in failed.output and "nothing was run" in failed.output
    assert _history(experiment) == before and len(list(experiment.glob("classic_*"))) == 2
    state.write_bytes(saved)

    # A checkpoint replaced by one whose unpickling would run code (a shared bucket, say): the
    # resume refuses it in one line before anything runs, and the code never runs.
    replaced = sorted(next(experiment.glob(f"*_{rows[1]['trial_id']}")).glob("checkpoint_*"))[-1] / "state.pt"
    good, marker = replaced.read_bytes(), tmp_path / "marker"
    torch.save({"program": _RunsCode(marker), "rng": {}, "iteration": 1}, replaced)
    refused = CliRunner().invoke(cli, ["resume", name, "--storage", str(storage)])
    assert refused.exit_code == 2, refused.output
    assert "refused: loading it would call posix.system" in refused.output, refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not marker.exists()
    assert _history(experiment) == before
    replaced.write_bytes(good)

    # The newest checkpoint one trial would resume from is damaged: it resumes from the one
    # before. (Its folder may hold a newer checkpoint than Tune's saved state and the row name:
    # a trial resumes from the newest there is.)
    damaged = rows[0]["trial_id"]
    known = Path(checkpoint_location(Location.parse(experiment), rows[0]["checkpoint_path"]).path)
    assert known.is_relative_to(experiment)
    *earlier, latest = sorted(known.parent.glob("checkpoint_*"))
    assert earlier, "no earlier checkpoint kept"
    state_file = latest / "state.pt"
    state_file.write_bytes(state_file.read_bytes()[:100])
    # the iterations after the checkpoint it falls back to run again
    redone = load_checkpoint_file(earlier[-1])["iteration"] + 1

    resumed = CliRunner().invoke(cli, ["resume", name, "--storage", str(storage)])
    assert resumed.exit_code == 0, resumed.output
    assert f"was at {original}; it continues at {experiment}" in resumed.output
    assert {p: p.read_bytes() for p in original.rglob("*") if p.is_file()} == untouched
    trials = {t["trial_id"]: t for t in pq.read_table(experiment / "trials.parquet").to_pylist()}
    assert all(t["outcome"] == "completed" and t["iterations"] == budget for t in trials.values()), trials
    assert "damaged checkpoint skipped" in trials[damaged]["restore_note"]
    assert "resumed from checkpoint_" in trials[damaged]["restore_note"]
    assert trials[damaged]["num_failures"] == 0
    other = next(t for t in trials if t != damaged)
    # SIGTERM: a trial may have written a checkpoint that Tune's saved state missed.
    note = trials[other]["restore_note"]
    assert note is None or ("its folder has" in note and "damaged" not in note), note
    after = _history(experiment)
    assert sorted(after) == sorted((t, i) for t in trials for i in range(1, budget + 1))
    for trial_dir in experiment.glob("classic_*"):  # checkpoint names order by age, none overwritten
        iterations = [_iteration(c) for c in sorted(trial_dir.glob("checkpoint_*"))]
        iterations = [i for i in iterations if i is not None]  # the damaged one left as it was
        assert iterations == sorted(iterations) and len(set(iterations)) == len(iterations), iterations
    for (tid, it), row in before.items():  # continued, not started over
        if tid == other or it < redone:
            assert after[(tid, it)]["timestamp"] == row["timestamp"], (tid, it)
    if (damaged, redone) in before:
        assert after[(damaged, redone)]["timestamp"] > before[(damaged, redone)]["timestamp"]
    # The copy's study got the resumed trials' results, the original's stayed as it was.
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{experiment / 'study.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]
    assert json.loads((experiment / "orchestrator.json").read_text())["former_locations"] == [str(original)]


def _left_behind(mark: Path) -> dict[int, str]:
    """The processes a stopped driver left running, once they had 10 s to exit."""
    left = {}
    for _ in range(20):
        left = marked_processes(str(mark))
        if not left:
            break
        time.sleep(0.5)
    return left


def _iteration(checkpoint: Path) -> int | None:
    try:
        return load_checkpoint_file(checkpoint)["iteration"]
    except ValueError:  # damaged
        return None


class _RunsCode:
    """Unpickling it creates ``marker`` (what a crafted model file or checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hang_up_a_resumed_driver(storage: Path, name: str, env: dict, tmp_path: Path, before: dict) -> None:
    """``orchestrator resume`` as a subprocess; SIGHUP once a trial reported again: exit 129,
    the unfinished trials `interrupted`, the resume hint, no Ray process left behind."""
    experiment = storage / name
    command = [sys.executable, "-m", "orchestrator.cli", "resume", name, "--storage", str(storage)]
    log_path = tmp_path / "hangup.log"
    with open(log_path, "wb") as log:
        driver = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.time() + 240
            while time.time() < deadline:
                with contextlib.suppress(OSError, ValueError, CorruptResults):
                    if len(_history(experiment)) > len(before):
                        break
                assert driver.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.5)
            else:
                pytest.fail("the resumed trials reported nothing in time")
            driver.send_signal(signal.SIGHUP)
            code = driver.wait(120)
            left = _left_behind(tmp_path)
        finally:
            kill_marked(str(tmp_path))
    output = log_path.read_text()
    assert code == 129, output[-3000:]
    assert "interrupted by SIGHUP" in output and f"continue with `orchestrator resume {name}`" in output
    assert not tracebacks(output), output[-3000:]  # Ray's own on the workers it stops aside
    assert "Checkpoint successfully created" not in output and "Restored on" not in output
    assert not left, f"processes outlived the search: {left}"
    outcomes = [r["outcome"] for r in _rows(experiment)]
    assert "interrupted" in outcomes and set(outcomes) <= {"interrupted", "completed"}, outcomes


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """Where the search's storage fills up: a real 45 MB tmpfs (it holds a few checkpoints) when
    this machine lets us mount one (root, as in CI), else a disk where the results' part files
    cannot be written after the second; ``free()`` gives the space back."""
    target = tmp_path / "disk"
    target.mkdir()
    if not subprocess.run(["mount", "-t", "tmpfs", "-o", "size=45m", "tmpfs", str(target)]).returncode:
        yield target, lambda: subprocess.run(["mount", "-o", "remount,size=400m", str(target)], check=True)
        subprocess.run(["umount", "-l", str(target)], check=False)
        return
    real_replace, writes = os.replace, []

    def replace(src, dst):
        if f"{os.sep}parts{os.sep}" in str(dst):
            writes.append(dst)
            if len(writes) > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr("orchestrator.storage.os.replace", replace)
    yield target, lambda: monkeypatch.setattr("orchestrator.storage.os.replace", real_replace)


def test_a_full_disk_stops_the_search_in_one_line_and_resume_finishes_it(local_ray, small_disk, monkeypatch):
    """Checkpoints, W&B and the results tables on a disk that fills up: the search stops at the
    first failure (no retries on a full disk), one error line, no traceback; once there is
    space, resume finishes every trial."""
    storage, free = small_disk
    name = "disk-full"
    experiment = storage / name
    monkeypatch.setenv("ORCHESTRATOR_PARQUET_FLUSH_S", "0")
    sets = [a for k, v in tiny_trial_config("classic").items() for a in ("-s", f"{k}={json.dumps(v)}")]
    common = ["--storage", str(storage)]
    search = [
        "search",
        "--space",
        "classic",
        "-n",
        "2",
        "--max-iterations",
        "4",
        "--scheduler",
        "fifo",
        "--name",
        name,
        "--wandb-mode",
        "offline",
        *common,
        *sets,
    ]
    result = CliRunner().invoke(cli, search)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.output[-3000:]
    assert f"orchestrator resume {name}" in errors[0]
    assert not tracebacks(result.output) and "Logging error" not in result.output, result.output[-3000:]
    assert not list(experiment.rglob("*.tmp")), "a failed write left a temporary file"
    assert len(_history(experiment)) >= 1  # what was written before stays readable

    free()
    resumed = CliRunner().invoke(cli, ["resume", name, *common])
    assert resumed.exit_code == 0, resumed.output
    assert not tracebacks(resumed.output), resumed.output[-3000:]
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    done = [t for t in trials if t["outcome"] == "completed"]
    assert len(done) == 2 and all(t["iterations"] == 4 for t in done), trials
    # A trial Ray Tune had started but not yet saved in its state when the write failed is
    # recorded as interrupted, with nothing lost (it had no iteration), and another runs instead.
    assert all(t["outcome"] == "interrupted" and t["iterations"] == 0 for t in trials if t not in done), (
        trials
    )


def test_damaged_parquet_is_one_line_and_exit_2_in_every_command(space_runs, tmp_path):
    root, _ = space_runs
    storage = tmp_path / "store"
    shutil.copytree(root / "e2e-classic", storage / "e2e-classic")
    table = storage / "e2e-classic" / "trials.parquet"
    table.write_bytes(table.read_bytes()[:-200])  # truncated: no footer
    common = ["e2e-classic", "--storage", str(storage)]
    for command in (
        ["results", *common],
        ["report", *common, "--out", str(tmp_path / "report")],
        ["export", *common, "--out", str(tmp_path / "model.pt")],
        ["resume", *common],
    ):
        result = CliRunner().invoke(cli, command)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, (command, result.output)
        assert len(lines) == 1, (command, lines)
        assert "trials.parquet is damaged and cannot be read" in lines[0], (command, lines)


def test_an_address_that_is_not_a_ray_head_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    server = _listener()
    monkeypatch.setenv("ORCHESTRATOR_ADDRESS_TIMEOUT_S", "3")
    sets = [a for k, v in tiny_trial_config("classic").items() for a in ("-s", f"{k}={json.dumps(v)}")]
    args = ["search", "--space", "classic", "--storage", str(tmp_path), "--name", "x", *sets]
    result = CliRunner().invoke(cli, [*args, "--address", f"127.0.0.1:{server.getsockname()[1]}"])
    server.close()
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "no Ray head answered" in result.output
    assert not (tmp_path / "x").exists(), "the name is not burned"


def test_resources_are_checked_against_a_joined_cluster(local_ray, tmp_path):
    import ray

    address = ray.get_runtime_context().gcs_address
    sets = [a for k, v in tiny_trial_config("classic").items() for a in ("-s", f"{k}={json.dumps(v)}")]
    args = ["search", "--space", "classic", "--storage", str(tmp_path), "--name", "x", "--address", address]
    result = CliRunner().invoke(cli, [*args, "--cpus-per-trial", "3", *sets])
    assert result.exit_code == 2, result.output
    assert "the largest node of the cluster" in result.output and "2 CPU(s)" in result.output
    assert not (tmp_path / "x").exists()


def test_wandb_runs_are_complete_while_the_machine_is_busy(local_ray, tmp_path):
    """Every trial's offline run holds its id and every iteration, with a CPU burner per core
    running at the priority of Ray's workers (nice 15)."""
    from tests.conftest import search

    burn = "import os\nos.nice(15 - os.nice(0))\nwhile True: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(os.cpu_count() or 2)]
    try:
        _, outcome = search(
            tmp_path, "classic", "busy", num_samples=2, max_iterations=2, scheduler="fifo", max_concurrent=2
        )
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    rows = outcome.leaderboard
    assert len(rows) == 2 and all(r["outcome"] == "completed" for r in rows)
    for row in rows:
        trial_dir = next((tmp_path / "busy").glob(f"*_{row['trial_id']}"))
        runs = list(trial_dir.glob("wandb/offline-run-*/*.wandb"))
        assert len(runs) == 1
        summary = summarize(runs[0])
        assert summary["run"]["id"] == row["trial_id"]
        assert [int(h["iteration"]) for h in summary["history"]] == [1, 2]


def test_resume_fresh_starts_over_only_when_asked(space_runs, tmp_path):
    """A finished experiment whose Ray Tune state is damaged: `resume` refuses (exit 1, nothing
    run); `resume --fresh` runs the search again in the same experiment and study, beside the
    trials that had finished."""
    from orchestrator.study import study_trials

    root, _ = space_runs
    storage, name = tmp_path / "store", "e2e-classic"
    shutil.copytree(root / name, storage / name)
    experiment = storage / name
    for state in experiment.glob("searcher-state-*.pkl"):
        state.write_bytes(b"")
    before = _rows(experiment)
    common = [name, "--storage", str(storage)]
    failed = CliRunner().invoke(cli, ["resume", *common])
    assert failed.exit_code == 1 and f"orchestrator resume {name} --fresh" in failed.output, failed.output
    assert _rows(experiment) == before

    fresh = CliRunner().invoke(cli, ["resume", *common, "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    rows = {r["trial_id"]: r for r in _rows(experiment)}
    assert len(rows) == 2 * len(before) and all(r["outcome"] == "completed" for r in rows.values())
    assert all(rows[r["trial_id"]]["last/val/acc"] == r["last/val/acc"] for r in before)
    study = study_trials(f"sqlite:///{experiment / 'study.db'}", name)
    assert sorted(t["ray_trial_id"] for t in study if t["state"] == "COMPLETE") == sorted(rows)
