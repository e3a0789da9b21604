"""Ray Tune's private internals, each behind one named function or base class (the rest of
the compatibility seam: :mod:`orchestrator.compat`).

Ray Tune's public API does not cover these things this project needs:

- telling Optuna that a trial ASHA stopped early was *pruned*: ``OptunaSearch`` keeps its study
  and its Tune-id -> Optuna-trial map in ``_ot_study``, ``_ot_trials`` and the set of finished
  ids in ``_completed_trials`` (``orchestrator.searchers``);
- which metrics Tune's progress table shows: Tune reads a function trainable's
  ``_progress_metrics`` attribute;
- ASHA's rung records, which Ray Tune never saves (``orchestrator.schedulers`` rebuilds them on a
  resume): ``AsyncHyperBandScheduler`` keeps them in ``_brackets[i]._rungs`` and records a result
  with ``_Bracket.on_result``; its metric, sign and budget are ``_metric``, ``_metric_op``,
  ``_max_t`` (:func:`asha_record`, :func:`asha_rung_records`, :func:`asha_joining_rung`; the
  count of stopped trials is ``_num_stopped``, :func:`asha_count_stop`);
- the Optuna study's set-up: :class:`OptunaSearchBase` turns ``OptunaSearch._setup_study`` into
  the hook ``study_ready`` (user attributes and warm-start trials go in once it exists);
- a trial whose checkpoint Tune's saved state names is gone from storage (``num_to_keep``
  deleted it after the state was last synced): ``Trainable.restore`` would fail it on every
  retry; :func:`function_trainable` subclasses the class ``wrap_function`` builds and restores
  from a stand-in (``_TrainingResult`` carries the checkpoint), and :func:`trial_checkpoints`
  lists the trial's folder through the session's private ``StorageContext`` (``get_storage``);
- where a trial's experiment is on the driver: :func:`trial_storage` reads the same
  ``StorageContext`` from ``trial.storage`` (its filesystem, experiment path, staging path);
- what Ray Tune only logs: when it cannot restore an experiment's state it logs "Failed to
  restore the run state." and starts the experiment over (:func:`restore_must_succeed` turns
  that into an exception), and on an interruption it prints its Python ``Tuner.restore`` hint
  (:func:`quiet_interrupt_hints` drops it: the CLI prints ``orchestrator resume NAME``);
- a checkpoint past ``num_to_keep`` that is gone already (a resumed trial is ahead of Tune's
  saved state): Ray's ``checkpoint_manager._delete_fs_path`` raises, Tune logs a traceback and
  skips its bookkeeping (:func:`tolerate_deleted_checkpoints`).

``check()`` (run with the other modules' by ``orchestrator.compat.check``, which
``tests/test_orchestrator_layout.py`` calls) fails fast when an upgrade removes or renames any
of these; that is also why ``pyproject.toml`` pins Ray to one minor release.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import inspect
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ray.tune.search.optuna import OptunaSearch


def searcher_study(searcher: OptunaSearch):
    """The searcher's Optuna study."""
    return searcher._ot_study


def optuna_trials(searcher: OptunaSearch) -> dict[str, Any]:
    """Tune trial id -> the Optuna trial the searcher asked for it."""
    return searcher._ot_trials


def completed_trial_ids(searcher: OptunaSearch) -> set[str]:
    """Tune trial ids the searcher has already told Optuna about."""
    return searcher._completed_trials


class OptunaSearchBase(OptunaSearch):
    """Ray's Optuna searcher with a public hook: :meth:`study_ready` runs once its study exists
    (Ray makes it in the private ``_setup_study``, also on a restore)."""

    def _setup_study(self, mode):
        super()._setup_study(mode)
        self.study_ready(searcher_study(self))

    def study_ready(self, study) -> None:
        pass


def set_progress_metrics(trainable: Callable, metrics: Sequence[str]) -> None:
    """Which metrics Tune's progress table shows for ``trainable``."""
    trainable._progress_metrics = list(metrics)


def trial_checkpoints() -> list:
    """Inside a trial: the checkpoints in the trial's folder on the experiment's storage, oldest
    first (Ray's private ``StorageContext`` of the trial's session knows the folder)."""
    from ray import tune
    from ray.train._internal.session import get_storage

    storage = get_storage()
    fs = storage.storage_filesystem
    return [tune.Checkpoint(p, filesystem=fs) for p in checkpoint_folders(fs, storage.trial_fs_path)]


def number_checkpoints_after(saved: list) -> None:
    """Inside a trial: its next checkpoint is named after the newest of ``saved`` (its folder's,
    oldest first). Tune numbers a trial's checkpoints from its saved experiment state, which can
    lag the folder (a driver killed or a node lost after a checkpoint was written): the trial
    would write ``checkpoint_000002`` again over a newer one, and names would no longer order by age."""
    from ray.train._internal.session import get_storage

    if not saved:
        return
    storage = get_storage()
    newest = int(saved[-1].path.rstrip("/").rsplit("_", 1)[-1])
    if storage.current_checkpoint_index <= newest:
        storage.current_checkpoint_index = newest + 1


def carry_failures(trial, recorded: int) -> None:
    """Let Ray Tune count ``--max-failures`` over every driver of a resumed search: it reads a
    trial's failures from its last experiment snapshot (which can miss failures just before a
    driver was killed); ``recorded`` is the count the interrupted driver wrote down."""
    if recorded > trial.num_failures:
        trial.run_metadata.num_failures = recorded


@dataclasses.dataclass(frozen=True)
class TrialStorage:
    """Where a trial's experiment is, as Ray's ``StorageContext`` (``trial.storage``, of the
    private module ``ray.train._internal.storage``) says; each read when asked."""

    context: Any

    @property
    def filesystem(self):  # pyarrow.fs.FileSystem
        return self.context.storage_filesystem

    @property
    def experiment_path(self) -> str:  # in ``filesystem``
        return self.context.experiment_fs_path

    @property
    def driver_staging_path(self) -> str:  # the driver's local copy, synced up to experiment_path
        return self.context.experiment_driver_staging_path

    @property
    def local(self) -> bool:
        import pyarrow.fs

        return isinstance(self.filesystem, pyarrow.fs.LocalFileSystem)


def trial_storage(trial) -> TrialStorage:
    return TrialStorage(trial.storage)


def checkpoint_folders(fs, folder: str) -> list[str]:
    """The ``checkpoint_NNNNNN`` folders in ``folder`` on the pyarrow filesystem ``fs``, oldest
    first (none when it cannot be listed)."""
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except OSError:
        return []
    saved = (i for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    return [i.path for i in sorted(saved, key=lambda i: i.base_name)]


def missing_checkpoint_stand_in(checkpoint):
    """``(checkpoint, note)`` for a trial Tune restores from ``checkpoint``: itself and no note
    while it exists; else the newest checkpoint the trial has beside it on storage (Tune's saved
    experiment state can be older than the trial: a driver killed after a trial's later
    checkpoints had deleted this one under ``num_to_keep``, before the state was synced), or
    ``None`` when there is none (the trial starts over); the note says which."""
    import pyarrow.fs as pafs
    from ray import tune

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        return checkpoint, None
    parent, name = path.rsplit("/", 1)
    saved = checkpoint_folders(fs, parent)
    gone = f"{name} is gone from storage (the experiment state was older than the trial)"
    if not saved:
        return None, f"{gone}; no other checkpoint, restarted from scratch"
    return tune.Checkpoint(saved[-1], filesystem=fs), f"{gone}; resumed from {saved[-1].rsplit('/', 1)[-1]}"


def function_trainable(fn: Callable[[dict], Any], on_note: Callable[[str], None]) -> type:
    """Ray Tune's trainable class for the function ``fn`` (what Tune builds from a function),
    which restores a trial whose checkpoint is gone from storage from the stand-in
    :func:`missing_checkpoint_stand_in` picks, telling ``on_note`` (in the trial's process),
    where Tune's ``Trainable.restore`` would fail the trial on every retry."""
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.tune.trainable.function_trainable import wrap_function

    class Trainable(wrap_function(fn)):
        def restore(self, checkpoint_path, *args, **kwargs):
            bookkeeping_to_trial_log()  # before Tune's "Restored on ... from checkpoint" line
            result = checkpoint_path
            checkpoint = getattr(result, "checkpoint", None)
            if checkpoint is not None:
                stand_in, note = missing_checkpoint_stand_in(checkpoint)
                if note:
                    on_note(note)
                if stand_in is None:  # nothing to restore: the function runs from its start
                    return None
                result = _TrainingResult(checkpoint=stand_in, metrics=result.metrics)
            return super().restore(result, *args, **kwargs)

    Trainable.__name__ = Trainable.__qualname__ = getattr(fn, "__name__", "trainable")
    if hasattr(fn, "_progress_metrics"):
        Trainable._progress_metrics = fn._progress_metrics
    return Trainable


#: Ray's loggers, in a trial's process, of its per-iteration bookkeeping ("Checkpoint
#: successfully created at: ...", "Restored on ... from checkpoint: ...").
BOOKKEEPING_LOGGERS = ("ray.train._internal.storage", "ray.tune.trainable.trainable")
#: The trial's own log of those lines, in its folder (beside its W&B run).
TRIAL_LOG = "ray-trial.log"


def bookkeeping_to_trial_log() -> None:
    """In a trial's process: Ray's bookkeeping lines go to ``TRIAL_LOG`` in the trial's folder
    instead of the worker's stderr, which Ray streams to the user's terminal once per iteration;
    warnings and errors still go to stderr too (idempotent)."""
    from ray import tune

    try:
        folder = tune.get_context().get_trial_dir()
    except Exception:  # not in a trial (a probe, a test): leave Ray's logging as it is
        return
    if not folder:
        return
    path = os.path.abspath(os.path.join(folder, TRIAL_LOG))
    for name in BOOKKEEPING_LOGGERS:
        logger = logging.getLogger(name)
        mine = [h for h in logger.handlers if getattr(h, "_trial_log", False)]
        if any(getattr(h, "baseFilename", None) == path for h in mine):
            continue
        for handler in mine:  # a reused worker's previous trial: its log is closed
            logger.removeHandler(handler)
            handler.close()
        os.makedirs(folder, exist_ok=True)
        to_file = logging.FileHandler(path)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_stderr = logging.StreamHandler()
        to_stderr.setLevel(logging.WARNING)
        for handler in (to_file, to_stderr):
            handler._trial_log = True
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


#: Ray Tune's loggers whose records these helpers watch.
CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"
TUNE_LOGGER = "ray.tune.tune"
RESTORE_FAILED = "Failed to restore the run state"
#: Starts of Ray Tune's interruption messages, which name its Python API.
INTERRUPT_HINTS = ("Experiment has been interrupted", "Stop signal received", "Trials did not complete")


class RestoreFailed(RuntimeError):
    """Ray Tune could not restore an experiment's state (``cause``: its exception)."""

    def __init__(self, cause: BaseException | None):
        lines = [line for line in str(cause or "").splitlines() if line.strip()]
        reason = f"{type(cause).__name__}: {lines[-1][:300]}" if lines else type(cause).__name__
        super().__init__(reason)
        self.cause = cause


class _RaiseOnRestoreFailure(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(RESTORE_FAILED):
            raise RestoreFailed(record.exc_info[1] if record.exc_info else None)
        return True


class _DropInterruptHints(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(INTERRUPT_HINTS)


@contextlib.contextmanager
def restore_must_succeed() -> Iterator[None]:
    """Within the block, Ray Tune failing to restore an experiment raises
    :class:`RestoreFailed` instead of silently starting the experiment over."""
    logger, watch = logging.getLogger(CONTROLLER_LOGGER), _RaiseOnRestoreFailure()
    logger.addFilter(watch)
    try:
        yield
    finally:
        logger.removeFilter(watch)


class _OneLineOnDiskFull(logging.Filter):
    """A trial that failed on a full disk: Tune's one line, without the traceback (the search
    stops with its own line, see ``orchestrator.callbacks``). After such a failure a resumed
    trial's checkpoint manager deletes an old checkpoint that was never written: one line too."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        full = error is not None and os.strerror(errno.ENOSPC) in str(error)
        saving = "Error handling checkpoint" in str(record.msg)
        never_written = saving and isinstance(error, FileNotFoundError)
        if full or never_written:
            cause = os.strerror(errno.ENOSPC) if full else f"{error} (never written)"
            record.msg, record.args = f"{record.getMessage().split(' TrainingResult(')[0]}: {cause}", ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_disk_full() -> None:
    """Trials failing on a full disk, and what follows on resume, are logged by Tune in one
    line each (idempotent)."""
    logger = logging.getLogger(CONTROLLER_LOGGER)
    if not any(isinstance(f, _OneLineOnDiskFull) for f in logger.filters):
        logger.addFilter(_OneLineOnDiskFull())


def quiet_interrupt_hints() -> None:
    """Drop Ray Tune's interruption messages (idempotent)."""
    logger = logging.getLogger(TUNE_LOGGER)
    if not any(isinstance(f, _DropInterruptHints) for f in logger.filters):
        logger.addFilter(_DropInterruptHints())


def tolerate_deleted_checkpoints() -> None:
    """Deleting a checkpoint that no longer exists succeeds (idempotent)."""
    from ray.train._internal import checkpoint_manager

    delete = checkpoint_manager._delete_fs_path
    if getattr(delete, "tolerant", False):
        return

    def tolerant(fs, fs_path: str) -> None:
        if fs.get_file_info(fs_path).type.name != "NotFound":
            delete(fs=fs, fs_path=fs_path)

    tolerant.tolerant = True
    checkpoint_manager._delete_fs_path = tolerant


class _Reported:
    """What ASHA's bracket reads of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def asha_record(scheduler, trial_id: str, t: float, result: dict) -> None:
    """Record ``result`` (a trial's report at iteration ``t``) in ``scheduler``'s rungs as Ray's
    ASHA would have on receiving it (one bracket); nothing at or past its budget."""
    value = result.get(scheduler._metric)
    if value is None or t >= scheduler._max_t or not math.isfinite(float(value)):
        return
    scheduler._brackets[0].on_result(_Reported(trial_id), t, scheduler._metric_op * float(value))


def asha_rung_records(scheduler) -> dict[float, dict[str, float]]:
    """Milestone -> {trial id: recorded value (signed so that larger is better)}."""
    return {milestone: dict(recorded) for milestone, recorded in scheduler._brackets[0]._rungs}


def asha_joining_rung(scheduler, trial_id: str, t: float) -> float | None:
    """The milestone at which Ray's ASHA would record a report of ``trial_id`` at ``t`` (the
    highest one reached that does not hold the trial yet), or None: none, or ``t`` at or past
    the budget."""
    if t >= scheduler._max_t:
        return None
    for milestone, recorded in scheduler._brackets[0]._rungs:  # highest milestone first
        if t >= milestone and trial_id not in recorded:
            return milestone
    return None


def asha_count_stop(scheduler) -> None:
    """Count a trial stopped outside Ray's rule in the scheduler's ``num_stopped``."""
    scheduler._num_stopped += 1


def asha_brackets(scheduler) -> int:
    return len(scheduler._brackets)


def _check_trial_restore(probe: Callable) -> list[str]:
    """What :func:`function_trainable` and :func:`trial_checkpoints` need, missing from Ray."""
    missing = []
    try:
        from ray.train._internal.checkpoint_manager import _TrainingResult
        from ray.tune.trainable.function_trainable import FunctionTrainable, wrap_function

        if not issubclass(wrap_function(probe), FunctionTrainable):
            missing.append("wrap_function making a FunctionTrainable")
        if "checkpoint" not in inspect.signature(_TrainingResult).parameters:
            missing.append("_TrainingResult(checkpoint=...)")
        if "does not exist on" not in inspect.getsource(FunctionTrainable.restore):
            missing.append("Trainable.restore failing a trial whose checkpoint is gone")
        from ray.train._internal import session as train_session
        from ray.train._internal.storage import StorageContext
    except ImportError as exc:
        return [f"function trainables, trial storage: {exc}"]
    if not hasattr(train_session, "get_storage"):
        missing.append("ray.train._internal.session.get_storage")
    for name in ("storage_filesystem", "trial_fs_path", "current_checkpoint_index"):
        if name not in inspect.getsource(StorageContext):
            missing.append(f"StorageContext.{name}")
    return missing


def check() -> list[str]:
    """What is missing from the installed Ray (empty when everything this module uses exists)."""
    missing = []
    searcher = OptunaSearch(
        space={"x": __import__("optuna").distributions.FloatDistribution(0, 1)}, metric="m", mode="max"
    )
    for name in ("_ot_study", "_ot_trials", "_completed_trials"):
        if not hasattr(searcher, name):
            missing.append(f"OptunaSearch.{name}")
    from ray.tune import progress_reporter

    detect = getattr(progress_reporter, "_detect_progress_metrics", None)

    def probe(config):
        return None

    set_progress_metrics(probe, ["m"])
    if detect is None or list(detect(probe) or []) != ["m"]:
        missing.append("Tune's _progress_metrics attribute of a function trainable")
    from ray.tune import tune as tune_module
    from ray.tune.execution import tune_controller

    if RESTORE_FAILED not in inspect.getsource(tune_controller.TuneController.__init__):
        missing.append(f"TuneController logging {RESTORE_FAILED!r}")
    if tune_controller.logger.name != CONTROLLER_LOGGER or tune_module.logger.name != TUNE_LOGGER:
        missing.append("Ray Tune's logger names")
    source = inspect.getsource(tune_module)
    for hint in INTERRUPT_HINTS:
        if hint not in source:
            missing.append(f"Ray Tune's message {hint!r}")
    missing += _check_trial_restore(probe)
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(time_attr="t", metric="m", mode="max", max_t=9, reduction_factor=4)
    for name in ("_brackets", "_metric", "_metric_op", "_max_t", "_num_stopped"):
        if not hasattr(asha, name):
            missing.append(f"AsyncHyperBandScheduler.{name}")
    try:
        asha_record(asha, "probe", 1, {"m": 0.5})
        if asha_rung_records(asha).get(1) != {"probe": 0.5}:
            missing.append("ASHA's _Bracket._rungs recording (milestone, {trial id: value})")
        if asha_joining_rung(asha, "probe", 4) != 4 or asha_joining_rung(asha, "probe", 2) is not None:
            missing.append("ASHA's _Bracket._rungs ordered highest milestone first")
    except (AttributeError, TypeError, IndexError) as exc:
        missing.append(f"ASHA's _Bracket.on_result / _rungs ({exc})")
    if not callable(getattr(OptunaSearch, "_setup_study", None)):
        missing.append("OptunaSearch._setup_study")
    from ray.train._internal import checkpoint_manager

    if "_delete_fs_path(fs=" not in inspect.getsource(checkpoint_manager._CheckpointManager):
        missing.append("Ray Train's checkpoint_manager._delete_fs_path(fs=..., fs_path=...)")
    from ray.train._internal.storage import StorageContext

    source = inspect.getsource(StorageContext)
    for name in ("storage_filesystem", "experiment_fs_path", "experiment_driver_staging_path"):
        if f"def {name}" not in source and f"self.{name}" not in source:
            missing.append(f"StorageContext.{name} (trial.storage)")
    return missing
