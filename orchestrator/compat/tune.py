"""Ray Tune's (and Ray's W&B integration's) private internals, each behind one named function
or base class (the rest of the compatibility seam: :mod:`orchestrator.compat`).

Ray Tune's public API does not cover these things this project needs:

- telling Optuna that a trial ASHA stopped early was *pruned*: ``OptunaSearch`` keeps its study
  and its Tune-id -> Optuna-trial map in ``_ot_study``, ``_ot_trials`` and the set of finished
  ids in ``_completed_trials`` (``orchestrator.searchers``);
- a best-value summary of the objectives in each W&B run: the run object exists only inside
  ``ray.air.integrations.wandb._WandbLoggingActor`` (its ``_wandb``), whose ``_handle_result``
  :class:`SummaryLoggingActor` extends for ``orchestrator.tracking``;
- which metrics Tune's progress table shows: Tune reads a function trainable's
  ``_progress_metrics`` attribute;
- handing a result to a trial's W&B logging actor without blocking the driver: Ray's
  ``WandbLoggerCallback.log_trial_result`` waits for the queue actor's answer (1-2 s for a
  trial's first result on a busy 2-core machine, which Tune reports as a slow callback);
  :func:`wandb_submit_result` submits the same queue item (``_trial_queues``, ``_clean_log``,
  ``_QueueItem``) and returns at once;
- ASHA's rung records, which Ray Tune never saves (``orchestrator.schedulers`` rebuilds them on a
  resume): ``AsyncHyperBandScheduler`` keeps them in ``_brackets[i]._rungs`` and records a result
  with ``_Bracket.on_result``; its metric, sign and budget are ``_metric``, ``_metric_op``,
  ``_max_t`` (:func:`asha_record`, :func:`asha_rung_records`);
- the W&B callback's logging actors: :class:`WandbCallbackBase` turns Ray's private
  ``_start_logging_actor`` into the hook ``start_run``; :func:`wandb_started_trials`,
  :func:`wandb_stop_run`, :func:`wandb_run_futures` and :func:`wandb_upload_timeout` read the
  callback's ``_trial_logging_actors``, ``_signal_logging_actor_stop``,
  ``_logging_future_to_trial`` and ``_upload_timeout``;
- the Optuna study's set-up: :class:`OptunaSearchBase` turns ``OptunaSearch._setup_study`` into
  the hook ``study_ready`` (user attributes and warm-start trials go in once it exists);
- what Ray Tune only logs: when it cannot restore an experiment's state it logs "Failed to
  restore the run state." and starts the experiment over (:func:`restore_must_succeed` turns
  that into an exception), and on an interruption it prints its Python ``Tuner.restore`` hint
  (:func:`quiet_interrupt_hints` drops it: the CLI prints ``orchestrator resume NAME``).

``check()`` (run with the other modules' by ``orchestrator.compat.check``, which
``tests/test_orchestrator_layout.py`` calls) fails fast when an upgrade removes or renames any
of these; that is also why ``pyproject.toml`` pins Ray to one minor release.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ray.air.integrations.wandb import WandbLoggerCallback, _clean_log, _QueueItem, _WandbLoggingActor
from ray.tune.search.optuna import OptunaSearch


class SummaryLoggingActor(_WandbLoggingActor):
    """Ray's W&B logging actor, summarising the objectives by their best value (W&B's
    parallel-coordinates and importance panels read the summary). Its W&B step is the trial's
    own ``iteration`` (Ray logs at ``training_iteration``, which runs ahead of it after a
    damaged checkpoint was skipped), and it closes W&B's service itself once the run has
    finished: left to the process's exit hook, the teardown raced the actor being stopped and
    printed a ``ConnectionResetError`` traceback."""

    def run(self):
        # W&B's own log files live in the run folder: on a full disk every log line would print
        # a "--- Logging error ---" stack here (the logging module's default for development).
        logging.raiseExceptions = False
        try:
            super().run()
        finally:
            self._wandb.teardown()

    def __init__(self, *args, objectives: Sequence[tuple[str, str]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self._objectives = list(objectives)
        self._defined = False

    def _handle_result(self, result: dict):
        log, config_update = super()._handle_result(result)
        if not self._defined:
            for metric, mode in self._objectives:
                self._wandb.define_metric(metric, summary=mode)
            self._defined = True
        if isinstance(result.get("iteration"), int) and "training_iteration" in log:
            log["training_iteration"] = result["iteration"]
        return log, config_update


def searcher_study(searcher: OptunaSearch):
    """The searcher's Optuna study."""
    return searcher._ot_study


def optuna_trials(searcher: OptunaSearch) -> dict[str, Any]:
    """Tune trial id -> the Optuna trial the searcher asked for it."""
    return searcher._ot_trials


def completed_trial_ids(searcher: OptunaSearch) -> set[str]:
    """Tune trial ids the searcher has already told Optuna about."""
    return searcher._completed_trials


def use_unrestartable_logging_actors(callback) -> None:
    """Make Ray's W&B callback create its logging actors without restarts. Ray creates them with
    ``max_restarts=-1``, which made every search print a ``core_worker`` error line ("has
    constructor arguments in the object store and max_restarts > 0") and, at the end, "infinite
    retries remaining" lines for actors it had stopped on purpose; a restarted W&B actor would
    start its run again without the queued results anyway."""
    import ray
    from ray.air.util.node import _force_on_current_node

    if callback._remote_logger_class is None:
        callback._remote_logger_class = ray.remote(num_cpus=0, max_restarts=0, **_force_on_current_node())(
            callback._logger_actor_cls
        )


def wandb_submit_result(callback, trial, result: dict):
    """Queue ``result`` for ``trial``'s W&B logging actor as Ray's ``log_trial_result`` does,
    but without waiting: returns the put's ObjectRef (the caller checks it later). Items from
    the driver reach the queue actor in submission order."""
    if trial not in callback._trial_logging_actors:
        callback.log_trial_start(trial)
    item = (
        _QueueItem.RESULT,
        _clean_log(result, video_kwargs=callback.video_kwargs, image_kwargs=callback.image_kwargs),
    )
    return callback._trial_queues[trial].actor.put.remote(item, None)


class WandbCallbackBase(WandbLoggerCallback):
    """Ray's W&B callback with a public hook: :meth:`start_run` is called where Ray starts a
    trial's logging actor (its private ``_start_logging_actor``); call ``start`` with the
    (changed) arguments to start it."""

    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
        def start(**kwargs):
            return super(WandbCallbackBase, self)._start_logging_actor(trial, exclude_results, **kwargs)

        self.start_run(trial, start, wandb_init_kwargs)

    def start_run(self, trial, start: Callable[..., Any], wandb_init_kwargs: dict) -> None:
        start(**wandb_init_kwargs)


def wandb_started_trials(callback) -> list:
    """The trials whose W&B logging actor this driver started."""
    return list(callback._trial_logging_actors)


def wandb_stop_run(callback, trial) -> None:
    """Send ``trial``'s logging actor its end marker (it finishes and uploads the run)."""
    callback._signal_logging_actor_stop(trial=trial)


def wandb_run_futures(callback) -> dict:
    """The logging actors' futures (they finish when the run is written) -> their trial."""
    return dict(callback._logging_future_to_trial)


def wandb_upload_timeout(callback) -> float:
    """How long the callback waits for its runs at the end of the experiment (seconds)."""
    return callback._upload_timeout


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


def asha_brackets(scheduler) -> int:
    return len(scheduler._brackets)


def check() -> list[str]:
    """What is missing from the installed Ray (empty when everything this module uses exists)."""
    missing = []
    searcher = OptunaSearch(
        space={"x": __import__("optuna").distributions.FloatDistribution(0, 1)}, metric="m", mode="max"
    )
    for name in ("_ot_study", "_ot_trials", "_completed_trials"):
        if not hasattr(searcher, name):
            missing.append(f"OptunaSearch.{name}")
    handler = getattr(_WandbLoggingActor, "_handle_result", None)
    if handler is None or list(inspect.signature(handler).parameters) != ["self", "result"]:
        missing.append("_WandbLoggingActor._handle_result(self, result)")
    if "self._wandb" not in inspect.getsource(_WandbLoggingActor):
        missing.append("_WandbLoggingActor._wandb (the run)")
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.util.queue import Queue

    source = inspect.getsource(WandbLoggerCallback)
    for name in (
        "_trial_queues",
        "_trial_logging_actors",
        "video_kwargs",
        "image_kwargs",
        "_remote_logger_class",
        "_logger_actor_cls",
    ):
        if f"self.{name}" not in source:
            missing.append(f"WandbLoggerCallback.{name}")
    if "self.actor" not in inspect.getsource(Queue.__init__):
        missing.append("ray.util.queue.Queue.actor")
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
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(time_attr="t", metric="m", mode="max", max_t=9)
    for name in ("_brackets", "_metric", "_metric_op", "_max_t"):
        if not hasattr(asha, name):
            missing.append(f"AsyncHyperBandScheduler.{name}")
    try:
        asha_record(asha, "probe", 1, {"m": 0.5})
        if asha_rung_records(asha).get(1) != {"probe": 0.5}:
            missing.append("ASHA's _Bracket._rungs recording (milestone, {trial id: value})")
    except (AttributeError, TypeError, IndexError) as exc:
        missing.append(f"ASHA's _Bracket.on_result / _rungs ({exc})")
    missing += _check_wandb_callback()
    return missing


def _check_wandb_callback() -> list[str]:
    from ray.air.integrations.wandb import WandbLoggerCallback

    missing = []
    for name in ("_start_logging_actor", "_signal_logging_actor_stop"):
        if not callable(getattr(WandbLoggerCallback, name, None)):
            missing.append(f"WandbLoggerCallback.{name}")
    source = inspect.getsource(WandbLoggerCallback)
    for name in ("_logging_future_to_trial", "_upload_timeout"):
        if f"self.{name}" not in source:
            missing.append(f"WandbLoggerCallback.{name}")
    if not callable(getattr(OptunaSearch, "_setup_study", None)):
        missing.append("OptunaSearch._setup_study")
    return missing
