"""Ray Tune callbacks of a search: the Parquet writer, a compact progress line per result, and
Tune's JSON/CSV loggers without the PNG payloads of ``media/*`` keys.

:class:`ParquetCallback` keeps ``history.parquet`` and ``trials.parquet`` (``orchestrator.results``)
up to date: whenever a trial finishes, and at most every ``flush_s`` seconds otherwise, it
appends a part with the reports received since the last flush and the rows of the trials that
changed, so a flush writes only what is new and a crash loses nothing that was flushed. At the
end of the search the parts are compacted into the two tables.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from orchestrator import interrupt, study_sync
from orchestrator.compat import tune as tune_compat
from orchestrator.relocation import here
from orchestrator.results import ResultsStore
from orchestrator.storage import Location, StorageWriteError
from orchestrator.trial_rows import INTERRUPTED, derive, history_row, trial_row

FLUSH_ENV = "ORCHESTRATOR_PARQUET_FLUSH_S"


def _without_media(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("media/")}


class JsonLogger(JsonLoggerCallback):
    def log_trial_result(self, iteration, trial, result):
        super().log_trial_result(iteration, trial, _without_media(result))


class CsvLogger(CSVLoggerCallback):
    def log_trial_result(self, iteration, trial, result):
        super().log_trial_result(iteration, trial, _without_media(result))


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) and abs(value) < 1e4 else str(value)


class ResultLines(Callback):
    """One line per reported result (besides Ray Tune's periodic table), and one when a trial
    ends: when, which trial, which iteration of how many, the objectives, clean accuracy and
    where the iteration's time went (training / validation)."""

    def __init__(
        self,
        *,
        unit: str,
        budget: int,
        keys: Sequence[str],
        echo: Any = None,
    ):
        self.unit, self.budget = unit, budget
        self.keys = list(dict.fromkeys(keys))
        self.echo = echo or (lambda line: print(line, flush=True))
        self._start = time.monotonic()
        self._last: dict[str, int] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "echo"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.echo = lambda line: print(line, flush=True)
        self._start = time.monotonic()  # a resumed driver counts from its own start

    def _stamp(self) -> str:
        seconds = int(time.monotonic() - self._start)
        return f"[{seconds // 60:3d}:{seconds % 60:02d}]"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        it = int(result.get("iteration") or result.get("training_iteration") or 0)
        self._last[trial.trial_id] = it
        shown = "  ".join(f"{k} {_fmt(result[k])}" for k in self.keys if k in result)
        times = [
            f"{what} {result[key]:.0f}s"
            for what, key in (("train", "time/train_s"), ("val", "time/eval_s"), ("test", "time/test_s"))
            if isinstance(result.get(key), (int, float))
        ]
        flag = "  DIVERGED" if result.get("diverged") else ""
        self.echo(
            f"{self._stamp()} {trial.trial_id} {self.unit} {it}/{self.budget}  {shown}{flag}"
            + (f"  ({', '.join(times)})" if times else "")
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        it = self._last.get(trial.trial_id, 0)
        last = getattr(trial, "last_result", None) or {}
        if it >= self.budget:
            how = "finished"
        elif last.get("deadline_end"):
            how = f"ended at the search's deadline after {self.unit} {it} (tested, checkpointed)"
        elif last.get("diverged"):
            how = f"diverged at {self.unit} {it}"
        else:
            how = f"stopped early by the scheduler after {self.unit} {it}"
        self.echo(f"{self._stamp()} {trial.trial_id} {how}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.echo(f"{self._stamp()} {trial.trial_id} failed ({trial.num_failures} failure(s))")


class ParquetCallback(Callback):
    """Appends what changed to the experiment's results while a search runs (see module)."""

    def __init__(
        self,
        experiment_uri: str,
        *,
        metadata: dict[str, Any],
        budget_key: str,
        objectives: Sequence[tuple[str, str]],
        flush_s: float | None = None,
        study_copy: str | None = None,
    ):
        self.experiment_uri = experiment_uri
        #: The study name when the driver copies its local study beside a remote experiment
        #: at every flush (orchestrator.study_sync).
        self.study_copy = study_copy
        self.meta = dict(metadata)
        self.budget_key = budget_key
        self.objectives = [tuple(o) for o in objectives]
        # Seconds between flushes while trials run (finished trials are always written at once).
        self.flush_s = flush_s if flush_s is not None else float(os.environ.get(FLUSH_ENV, 10.0))
        self._init_state()

    def _init_state(self) -> None:
        #: trial id -> iteration -> scalar report (media dropped once written)
        self._history: dict[str, dict[int, dict[str, Any]]] = {}
        self._pending: list[dict[str, Any]] = []
        self._trials: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._previous_trials: dict[str, dict[str, Any]] = {}
        #: trial id -> the status of its last written row
        self._written_status: dict[str, str] = {}
        #: trial id -> TERMINATED / ERROR: Ray calls on_trial_complete while the trial's status
        #: still reads RUNNING (it changes when the actor has stopped).
        self._ended: dict[str, str] = {}
        self._last_flush = 0.0
        #: trials whose written row may still change, and how many of Ray's trials were seen
        #: (``on_step_end`` looks at those only: Ray passes every trial of the search each step)
        self._open: set[str] = set()
        self._seen = 0
        self._store: ResultsStore | None = None
        #: The user stopped the search (set at its end, see ``orchestrator.interrupt``).
        self._interrupted = False

    def __getstate__(self):  # the experiment state pickles callbacks: keep it small
        state = self.__dict__.copy()
        for key in (
            "_history",
            "_pending",
            "_trials",
            "_dirty",
            "_previous_trials",
            "_written_status",
            "_ended",
            "_last_flush",
            "_interrupted",
            "_open",
            "_seen",
            "_store",
        ):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_state()

    @property
    def store(self) -> ResultsStore:
        """One store per driver (it numbers its parts without listing them per flush)."""
        if self._store is None:
            self._store = ResultsStore(Location.parse(here(self.experiment_uri)))
        return self._store

    def metadata(self) -> dict[str, str]:
        """What a reader needs besides the rows (``orchestrator report`` uses nothing else)."""
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.meta.items()}

    def setup(self, **info) -> None:
        """On a resumed search, start from what the interrupted driver wrote."""
        store = self.store
        if not store.has_results():
            return
        trials, history, _ = store.read()
        for row in history:
            scalar = {k: v for k, v in row.items() if not k.startswith("media/")}
            self._history.setdefault(row["trial_id"], {})[int(row.get("iteration") or 0)] = scalar
        for row in trials:
            self._previous_trials[row["trial_id"]] = row

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = history_row(trial.trial_id, result)
        self._pending.append(row)
        scalar = {k: v for k, v in row.items() if not k.startswith("media/")}
        self._history.setdefault(trial.trial_id, {})[int(row.get("iteration") or 0)] = scalar
        self._trials[trial.trial_id] = trial
        self._dirty.add(trial.trial_id)
        if time.monotonic() - self._last_flush > self.flush_s:
            self.flush()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        recorded = self._previous_trials.get(trial.trial_id, {}).get("num_failures") or 0
        tune_compat.carry_failures(trial, int(recorded))  # --max-failures counts across resumes

    def on_step_end(self, iteration, trials, **info) -> None:
        if len(trials) < self._seen:  # not Ray's growing list of trials: look at all of them
            self._seen = 0
        for trial in trials[self._seen :]:
            self._trials[trial.trial_id] = trial
            self._open.add(trial.trial_id)
        self._seen = len(trials)
        for tid in list(self._open):
            status = self._status(tid, self._trials[tid])
            if status != self._written_status.get(tid):
                self._dirty.add(tid)
            elif status in FINAL_STATUSES:
                self._open.discard(tid)  # its row is written and will not change

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        if DISK_FULL in (_first_line_of_error(trial) or ""):
            self.on_trial_error(iteration, trials, trial)  # recorded errored; the search stops
        self._ended.pop(trial.trial_id, None)  # it runs again (from its last checkpoint)
        self._open.add(trial.trial_id)
        self._trials[trial.trial_id] = trial  # its failure count goes into the next flush
        self._dirty.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._trials[trial.trial_id] = trial
        self._ended[trial.trial_id] = "TERMINATED"
        self._dirty.add(trial.trial_id)
        self.flush()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._trials[trial.trial_id] = trial
        self._ended[trial.trial_id] = "ERROR"
        self._dirty.add(trial.trial_id)
        self.flush()
        _stop_on_a_full_disk(trial)

    def _status(self, tid: str, trial) -> str:
        if tid in self._ended and trial.status in ("RUNNING", "PENDING", "TERMINATED"):
            return self._ended[tid]
        if self._interrupted and trial.status != "ERROR":
            # Stopped by the user, not finished: Tune's cleanup marks it TERMINATED.
            return INTERRUPTED
        return trial.status

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            self._trials[trial.trial_id] = trial
            self._dirty.add(trial.trial_id)
        self._interrupted = bool(interrupt.requested())
        self.flush()
        self.store.compact(self.metadata(), trials=self.trial_rows(final=True))

    def _row(self, tid: str, trial) -> dict[str, Any]:
        history = [row for _, row in sorted(self._history.get(tid, {}).items())]
        checkpoint = trial.checkpoint
        error = None
        status = self._status(tid, trial)
        if status == "ERROR" and trial.error_file:
            error = _first_line_of_error(trial)
        return trial_row(
            trial_id=tid,
            status=status,
            config=dict(trial.config),
            history=history,
            space=self.meta.get("space", ""),
            trainable=self.meta.get("trainable", ""),
            budget_key=self.budget_key,
            checkpoint_path=checkpoint.path if checkpoint else None,
            num_failures=self._failures(tid, trial),
            error=error,
        )

    def _failures(self, tid: str, trial) -> int:
        """The trial's failures over every driver: Ray Tune restores the count its last
        experiment snapshot held, which misses a failure in the seconds between that snapshot and
        a killed driver; the interrupted driver's own record may hold it."""
        recorded = self._previous_trials.get(tid, {}).get("num_failures") or 0
        return max(int(trial.num_failures), int(recorded))

    def trial_rows(self, final: bool = False) -> list[dict[str, Any]]:
        """Every trial's row (those of an interrupted driver's trials included), Pareto marked.
        ``final``: the search is over, so a row of an earlier driver's trial that this one did
        not run again cannot stay ``running``; it reads ``interrupted``."""
        rows = {tid: dict(row) for tid, row in self._previous_trials.items()}
        if final:
            for row in rows.values():
                if row.get("status") in ("RUNNING", "PENDING", "PAUSED"):
                    row["status"], row["outcome"] = INTERRUPTED, "interrupted"
        for tid, trial in self._trials.items():
            rows[tid] = self._row(tid, trial)
        out = list(rows.values())
        derive(out, {**self.meta, "objectives": self.objectives})
        return out

    def flush(self) -> None:
        """Append the new reports and the rows of the trials that changed (readers mark the
        Pareto front over all rows)."""
        self._last_flush = time.monotonic()
        if not self._pending and not self._dirty:
            return
        changed = [self._row(tid, self._trials[tid]) for tid in sorted(self._dirty) if tid in self._trials]
        self.store.append(self._pending, changed, self.metadata())
        if getattr(self, "study_copy", None):
            study_sync.push_default(Location.parse(here(self.experiment_uri)), self.study_copy)
        self._written_status.update({row["trial_id"]: row["status"] for row in changed})
        self._pending = []
        self._dirty = set()


#: Statuses after which a trial's row does not change (unless Ray retries it: ``on_trial_recover``).
FINAL_STATUSES = ("TERMINATED", "ERROR")

#: What a write on a full disk says (``os.strerror(errno.ENOSPC)``).
DISK_FULL = os.strerror(errno.ENOSPC)


def _stop_on_a_full_disk(trial) -> None:
    """A trial failed on a full disk: retrying fails again (each retry spending one of its
    --max-failures), so the search stops, as when a write of its own tables fails."""
    if DISK_FULL in (_first_line_of_error(trial) or ""):
        raise StorageWriteError(trial.path, OSError(errno.ENOSPC, DISK_FULL))


def _first_line_of_error(trial) -> str | None:
    """The last line of the trial's latest error: from the driver's copy of its error file
    (the storage's copy is synced later, and not at all when the disk is full)."""
    try:
        local = trial.error_file
        error = Path(local).read_text() if local and Path(local).exists() else trial.get_error()
    except Exception:
        return None
    if error is None:
        return None
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__
