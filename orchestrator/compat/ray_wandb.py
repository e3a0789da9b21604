"""Ray's W&B integration's private internals, each behind one named function or base class (the
rest of the compatibility seam: :mod:`orchestrator.compat`).

- a best-value summary of the objectives in each W&B run: the run object exists only inside
  ``ray.air.integrations.wandb._WandbLoggingActor`` (its ``_wandb``), whose ``_handle_result``
  :class:`SummaryLoggingActor` extends for ``orchestrator.tracking``;
- handing a result to a trial's W&B logging actor without blocking the driver: Ray's
  ``WandbLoggerCallback.log_trial_result`` waits for the queue actor's answer (1-2 s for a
  trial's first result on a busy 2-core machine, which Tune reports as a slow callback);
  :func:`wandb_submit_result` submits the same queue item (``_trial_queues``, ``_clean_log``,
  ``_QueueItem``) and returns at once;
- the W&B callback's logging actors: :class:`WandbCallbackBase` turns Ray's private
  ``_start_logging_actor`` into the hook ``start_run``; :func:`wandb_started_trials`,
  :func:`wandb_stop_run`, :func:`wandb_run_futures` and :func:`wandb_upload_timeout` read the
  callback's ``_trial_logging_actors``, ``_signal_logging_actor_stop``,
  ``_logging_future_to_trial`` and ``_upload_timeout``;
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ray.air.integrations.wandb import WandbLoggerCallback, _clean_log, _QueueItem, _WandbLoggingActor


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
    (changed) arguments to start it. Its logging actors are :class:`SummaryLoggingActor`."""

    _logger_actor_cls = SummaryLoggingActor

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


def check() -> list[str]:
    """What is missing from the installed Ray's W&B integration (empty when all is there)."""
    from ray.util.queue import Queue

    missing = []
    handler = getattr(_WandbLoggingActor, "_handle_result", None)
    if handler is None or list(inspect.signature(handler).parameters) != ["self", "result"]:
        missing.append("_WandbLoggingActor._handle_result(self, result)")
    if "self._wandb" not in inspect.getsource(_WandbLoggingActor):
        missing.append("_WandbLoggingActor._wandb (the run)")

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
    for name in ("_start_logging_actor", "_signal_logging_actor_stop"):
        if not callable(getattr(WandbLoggerCallback, name, None)):
            missing.append(f"WandbLoggerCallback.{name}")
    source = inspect.getsource(WandbLoggerCallback)
    for name in ("_logging_future_to_trial", "_upload_timeout"):
        if f"self.{name}" not in source:
            missing.append(f"WandbLoggerCallback.{name}")
    return missing
