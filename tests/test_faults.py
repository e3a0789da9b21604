"""Faults without a running search: damaged checkpoints, write failures, interrupted rows,
Ctrl-C handling, a non-Ray listener given as --address."""

import errno
import os
import signal
import socket
import threading
import time

import pytest
import torch
from ray import tune

from orchestrator import interrupt
from orchestrator.compat import tune as tune_compat
from orchestrator.errors import UserError
from orchestrator.plan_checks import check_cluster_resources
from orchestrator.ray_runtime import cluster_nodes
from orchestrator.results import ResultsStore
from orchestrator.settings import SearchSettings
from orchestrator.storage import Location, StorageWriteError
from orchestrator.trial_rows import history_row, outcome, trial_row
from orchestrator.tune_trainable import _loader, checkpoint_candidates, checkpoint_newer_than
from trainables.reporting import ConsoleReporter, load_first_readable, save_checkpoint


def _state(iteration: int) -> dict:
    return {"program": {"w": torch.ones(2) * iteration}, "rng": {}, "iteration": iteration}


def _checkpoints(root, iterations, damaged=()):
    for i in iterations:
        path = save_checkpoint(_state(i), root / f"checkpoint_{i:06d}")
        if i in damaged:
            path.write_bytes(path.read_bytes()[:40])  # truncated mid-write
    return tune.Checkpoint.from_directory(str(root / f"checkpoint_{max(iterations):06d}"))


def _load(checkpoint):
    candidates = checkpoint_candidates(checkpoint)
    return load_first_readable([(c.path.rsplit("/", 1)[-1], _loader(c)) for c in candidates])


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    state, note = _load(_checkpoints(tmp_path, [1, 2, 3], damaged={3}))
    assert state["iteration"] == 2 and torch.equal(state["program"]["w"], torch.full((2,), 2.0))
    assert "checkpoint_000003" in note and "resumed from checkpoint_000002" in note


def test_no_readable_checkpoint_restarts_from_scratch_and_says_so(tmp_path):
    state, note = _load(_checkpoints(tmp_path, [1, 2], damaged={1, 2}))
    assert state is None and "restarted from scratch" in note
    assert "checkpoint_000002" in note and "checkpoint_000001" in note


def test_an_intact_checkpoint_loads_without_a_note(tmp_path):
    state, note = _load(_checkpoints(tmp_path, [1, 2]))
    assert state["iteration"] == 2 and note is None


def test_a_checkpoint_gone_from_storage_is_replaced_by_the_trials_newest(tmp_path):
    """Tune's saved state can name a checkpoint that num_to_keep deleted after the state was
    synced (a killed driver): the trial restores from its newest checkpoint instead of failing
    every retry, and says so; with none left it starts over and says so."""
    newest = _checkpoints(tmp_path, [3, 4])
    assert tune_compat.missing_checkpoint_stand_in(newest) == (newest, None)
    gone = tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000002"))
    stand_in, note = tune_compat.missing_checkpoint_stand_in(gone)
    assert stand_in.path.endswith("checkpoint_000004")
    assert "checkpoint_000002 is gone from storage" in note and "resumed from checkpoint_000004" in note
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = tune.Checkpoint.from_directory(str(empty / "checkpoint_000001"))
    stand_in, note = tune_compat.missing_checkpoint_stand_in(nothing)
    assert stand_in is None and "restarted from scratch" in note


def test_a_checkpoint_newer_than_tunes_saved_state_is_preferred(tmp_path):
    saved = [tune.Checkpoint.from_directory(str(tmp_path / f"checkpoint_00000{i}")) for i in (1, 2)]
    assert checkpoint_newer_than(None, []) is None
    assert checkpoint_newer_than(None, saved) is saved[1]  # Tune's state had none
    assert checkpoint_newer_than(saved[0], saved) is saved[1]
    assert checkpoint_newer_than(saved[1], saved) is None


def test_tune_deleting_a_checkpoint_that_is_gone_already_is_no_error(tmp_path):
    """A resumed trial ahead of Tune's saved state: the killed driver deleted a checkpoint Tune's
    record still keeps. Ray's checkpoint manager (the one Tune runs) raised on deleting it, and
    Tune logged a traceback and skipped its bookkeeping; with the compat shim nothing raises,
    and what exists past ``num_to_keep`` is still deleted."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    tune_compat.tolerate_deleted_checkpoints()
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=1))
    folders = [tmp_path / f"checkpoint_00000{i}" for i in range(3)]
    for i, folder in enumerate(folders):
        if i:  # the first is gone before Tune deletes it
            folder.mkdir()
        manager.register_checkpoint(_TrainingResult(checkpoint=Checkpoint(str(folder)), metrics={"i": i}))
    assert [f.exists() for f in folders] == [False, False, True]


@pytest.mark.train
def test_a_trial_restored_from_its_final_checkpoint_reports_its_last_result_again():
    """A stand-in can be the trial's final checkpoint (it had finished unbeknown to Tune's saved
    state): the trial trains no more and reports its last result again, so nothing ends on the
    stale one, with that checkpoint again, so Tune's record of the trial names one that exists."""
    from tests.test_trainables import CASES
    from trainables import get_spec
    from trainables.reporting import MemoryReporter
    from trainables.trial import run_trial

    class Recording(MemoryReporter):
        def report(self, metrics, checkpoint):
            self.reported_checkpoints = [*getattr(self, "reported_checkpoints", []), checkpoint]
            super().report(metrics, checkpoint)

    config = {**CASES["classic"], "media_every": 0}
    first = MemoryReporter()
    run_trial(get_spec("classic"), config, first)
    again = Recording(resume_from=first.checkpoint)
    last = run_trial(get_spec("classic"), config, again)
    assert again.reports == [last] and last == first.reports[-1]
    [checkpoint] = again.reported_checkpoints
    assert checkpoint["iteration"] == last["iteration"] and checkpoint["metrics"] == last


def test_train_with_a_damaged_checkpoint_starts_over_and_says_so(tmp_path):
    path = save_checkpoint(_state(4), tmp_path)
    path.write_bytes(b"not a checkpoint")
    lines = []
    reporter = ConsoleReporter("classic", 5, "epoch", (), checkpoint_dir=tmp_path, echo=lines.append)
    assert reporter.load_checkpoint() is None
    assert any("damaged checkpoint skipped" in line and "restarted from scratch" in line for line in lines)


def test_the_restore_note_lands_in_history_and_the_trial_row():
    history = [
        history_row("t1", {"iteration": 3, "val/acc": 0.5}),
        history_row("t1", {"iteration": 4, "val/acc": 0.6, "restore_note": "damaged checkpoint skipped: x"}),
        history_row("t1", {"iteration": 5, "val/acc": 0.7}),
    ]
    row = trial_row(
        trial_id="t1",
        status="TERMINATED",
        config={"epochs": 5},
        history=history,
        space="classic",
        trainable="classic",
        budget_key="epochs",
        checkpoint_path=None,
    )
    assert row["restore_note"] == "damaged checkpoint skipped: x" and row["outcome"] == "completed"


def test_a_failed_write_names_the_path_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = Location.parse(tmp_path).child("trials.parquet")
    target.write_bytes(b"old")

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("orchestrator.storage.os.replace", disk_full)
    with pytest.raises(StorageWriteError) as caught:
        target.write_bytes(b"new")
    assert str(caught.value) == f"cannot write {target.path}: No space left on device"
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["trials.parquet"]


def test_rows_left_running_are_marked_interrupted(tmp_path):
    store = ResultsStore(Location.parse(tmp_path))
    base = {"space": "classic", "trainable": "classic", "iterations": 1, "budget": 3}
    store.append(
        [],
        [
            {**base, "trial_id": "a", "status": "RUNNING", "outcome": "running"},
            {**base, "trial_id": "b", "status": "TERMINATED", "outcome": "completed"},
        ],
        {"space": "classic"},
    )
    assert store.mark_unfinished_interrupted() == 1
    rows = {r["trial_id"]: r for r in store.read()[0]}
    assert rows["a"]["outcome"] == "interrupted" and rows["a"]["iterations"] == 1
    assert rows["b"]["outcome"] == "completed"
    assert store.mark_unfinished_interrupted() == 0
    assert outcome("INTERRUPTED", 1, 3, False) == "interrupted"


def test_ctrl_c_outside_a_running_tuner_raises_at_once():
    # Python's own handler, whatever this process started with (a background job ignores SIGINT)
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        lines = []
        with interrupt.stop_requests(lines.append), pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert interrupt.requested() == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, started_with)


def test_an_ignored_sigint_stays_ignored():
    """`nohup orchestrator search ...` (or a job started in the background) ignores SIGINT."""
    started_with = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.stop_requests(lambda line: None):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert not interrupt.requested()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, started_with)


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_first_signal_is_handed_to_tune_a_second_forces(first, monkeypatch):
    lines, tune_stops, hung_up = [], [], []
    before = signal.getsignal(signal.SIGTERM)
    # a SIGHUP leaves the terminal that hung up (here it would silence pytest's own terminal)
    monkeypatch.setattr(interrupt, "_leave_hung_up_terminal", lambda: hung_up.append(True))

    def signal_interrupt_tune_run(signum, frame):  # what Ray Tune installs while fit runs
        tune_stops.append(signum)

    # SIGINT handled, as in a terminal (tests started in the background begin with it ignored).
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupt.stop_requests(lines.append):
            signal.signal(signal.SIGUSR1, signal_interrupt_tune_run)
            os.kill(os.getpid(), first)
            time.sleep(0.2)
            assert tune_stops == [signal.SIGUSR1] and interrupt.requested() == first
            assert "stopping the search" in lines[0] and "again forces" in lines[0]
            assert hung_up == ([True] if first == signal.SIGHUP else [])
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        assert signal.getsignal(signal.SIGTERM) is before  # restored
    finally:
        signal.signal(signal.SIGINT, started_with)


def test_a_hung_up_terminal_is_left_for_dev_null(tmp_path):
    """After SIGHUP, standard output and error that were a terminal go to /dev/null; files and
    pipes stay (a search run with `> log` keeps its log)."""
    import pty
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from orchestrator.interrupt import _leave_hung_up_terminal\n"
        "_leave_hung_up_terminal()\n"
        "print('to the terminal?', flush=True)\n"
        "sys.stderr.write(os.readlink('/proc/self/fd/1') + ' ' + os.readlink('/proc/self/fd/2'))\n"
    )
    main, child = pty.openpty()
    try:
        err = tmp_path / "err"
        with open(err, "w") as stderr:
            subprocess.run(
                [sys.executable, "-c", script], stdout=child, stderr=stderr, timeout=60, check=True
            )
        assert err.read_text().split()[0] == "/dev/null", "the terminal was left"
        assert err.read_text().split()[1] == str(err), "a file stays"
    finally:
        os.close(main)
        os.close(child)


def test_restore_failure_raises_instead_of_starting_over():
    import logging

    logger = logging.getLogger(tune_compat.CONTROLLER_LOGGER)
    with tune_compat.restore_must_succeed(), pytest.raises(tune_compat.RestoreFailed, match="EOFError"):
        try:
            raise EOFError("Ran out of input")
        except EOFError:
            logger.exception("Failed to restore the run state.")
    logger.error("Failed to restore the run state.")  # outside the block: only logged


def _listener():
    """A TCP server that answers like a web server, not like Ray."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nnot ray\n")

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.mark.slow
def test_an_address_where_no_ray_head_answers_fails_in_bounded_time():
    server = _listener()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(UserError, match="no Ray head answered within 3 s"):
        cluster_nodes(address, timeout=3)
    assert time.monotonic() - start < 15
    server.close()


def test_resources_are_checked_against_the_clusters_largest_node():
    nodes = [{"CPU": 4.0}, {"CPU": 8.0, "GPU": 1.0}]
    check_cluster_resources(SearchSettings(space="classic", cpus_per_trial=8, gpus_per_trial=1), nodes)
    with pytest.raises(UserError, match=r"--cpus-per-trial 16: the largest node .* has 8 CPU"):
        check_cluster_resources(SearchSettings(space="classic", cpus_per_trial=16), nodes)
    with pytest.raises(UserError, match=r"--gpus-per-trial 2: .* has 1 GPU"):
        check_cluster_resources(SearchSettings(space="classic", gpus_per_trial=2), nodes)


@pytest.mark.train
def test_a_resumed_run_logs_again_the_iterations_its_killed_run_never_wrote(tmp_path):
    """The killed driver's W&B run has iterations 1-2, Parquet has 1-4: the resumed run logs 3
    and 4 before its first new result (5)."""
    from types import SimpleNamespace

    import pyarrow.fs
    import wandb

    from orchestrator.compat.wandb_files import logged_steps
    from orchestrator.tracking import WandbCallback

    trial_dir = tmp_path / "classic_t1"
    run = wandb.init(
        mode="offline", dir=str(trial_dir), id="t1", project="p", settings=wandb.Settings(silent=True)
    )
    for step in (1, 2):
        run.log({"val/acc": 0.5}, step=step)
    run.finish()
    wandb.teardown()  # waits for W&B's service to exit, so the run file is complete on disk
    assert logged_steps(trial_dir) == {1, 2}
    rows = [
        {"trial_id": "t1", "iteration": i, "training_iteration": i, "val/acc": i / 10} for i in range(1, 5)
    ]
    rows.append({"trial_id": "other", "iteration": 3, "training_iteration": 3, "val/acc": 0.0})
    row = {"trial_id": "t1", "status": "RUNNING", "outcome": "running", "iterations": 4}
    ResultsStore(Location.parse(tmp_path)).append(rows, [row], {"space": "classic"})
    trial = SimpleNamespace(
        trial_id="t1",
        path=str(trial_dir),
        storage=SimpleNamespace(
            storage_filesystem=pyarrow.fs.LocalFileSystem(), experiment_fs_path=str(tmp_path)
        ),
    )
    callback = WandbCallback(project="p", group="g", job_type="classic", mode="offline", objectives=[])
    missing = callback._missing_steps(trial, upto=5)
    assert [r["iteration"] for r in missing] == [3, 4] and missing[0]["val/acc"] == 0.3
    assert "trial_id" not in missing[0]
    assert callback._missing_steps(trial, upto=3) == []  # W&B has 1-2 already
    fresh = SimpleNamespace(**{**vars(trial), "path": str(tmp_path / "classic_new")})
    assert callback._missing_steps(fresh, upto=5) == []  # a first run: nothing to catch up


def test_a_stray_file_in_parts_is_ignored_not_read_or_deleted(tmp_path, caplog):
    """A copy a user made beside the parts (`history-000001 (copy).parquet`) used to crash
    resume with a ValueError after minutes of training."""
    store = ResultsStore(Location.parse(tmp_path))
    store.append(
        [{"trial_id": "a", "iteration": 1, "val/acc": 0.5}], [{"trial_id": "a"}], {"space": "classic"}
    )
    part = tmp_path / "parts" / "history-000001.parquet"
    stray = tmp_path / "parts" / "history-000001 (copy).parquet"
    stray.write_bytes(part.read_bytes())
    (tmp_path / "parts" / "notes.txt").write_text("mine")
    fresh = ResultsStore(Location.parse(tmp_path))
    _, history, _ = fresh.read()
    assert len(history) == 1 and "ignoring" in caplog.text
    fresh.append([{"trial_id": "a", "iteration": 2, "val/acc": 0.6}], [], {"space": "classic"})
    assert (tmp_path / "parts" / "history-000002.parquet").exists()
    fresh.compact({"space": "classic"})
    assert stray.exists() and (tmp_path / "parts" / "notes.txt").exists(), "left alone"
    assert len(ResultsStore(Location.parse(tmp_path)).read()[1]) == 2


def test_the_traceback_check_excuses_only_rays_sigterm_handler_on_a_worker():
    """CI once saw Ray's SIGTERM handler raise inside a weakref callback of a worker it stopped,
    printed into the resumed driver's output; a trial's or the driver's own traceback counts."""
    from tests.conftest import tracebacks

    worker = "\x1b[36m(classic pid=16554)\x1b[0m "
    noise = [
        "Exception ignored in: <function WeakSet.__init__.<locals>._remove>",
        "Traceback (most recent call last):",
        '  File "_weakrefset.py", line 39, in _remove',
        "",
        '  File "ray/_private/worker.py", line 1063, in sigterm_handler',
        "SystemExit: 1",
    ]
    ray_noise = "\n".join(worker + line for line in noise)
    trial = "\n".join(worker + line for line in ["Traceback (most recent call last):", "ValueError: bad"])
    driver = "Traceback (most recent call last):\n  File x\nKeyError: 1"
    assert tracebacks(f"resuming\n{ray_noise}\ndone") == []
    assert len(tracebacks(f"{ray_noise}\n{trial}")) == 1
    assert len(tracebacks(f"{driver}\n{ray_noise}")) == 1
