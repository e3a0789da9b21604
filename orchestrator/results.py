"""Results on disk: two Parquet tables per experiment, written while the search runs.

- ``history.parquet``: one row per report (trial id, iteration, every scalar metric, and the
  ``media/*`` PNG payloads as binary columns).
- ``trials.parquet``: one row per trial: id, status, outcome (completed / early_stopped /
  diverged / error / running), space, flattened config (``config/...``), last and best
  metrics (``last/...``, ``best/...``), iterations, budget, wall time, checkpoint path,
  diverged flag, and for Pareto searches whether the trial is on the front of full-budget
  trials.

:class:`ParquetCallback` rewrites both files (atomically) whenever a trial finishes and at
most every ``flush_s`` seconds otherwise, so a crash loses at most a few seconds of history
and nothing of a finished trial. Reading them back needs pyarrow only, not Ray.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune import Callback

from orchestrator.schedulers import pareto_front
from orchestrator.storage import Location

FLUSH_ENV = "ORCHESTRATOR_PARQUET_FLUSH_S"
HISTORY_FILE = "history.parquet"
TRIALS_FILE = "trials.parquet"
#: Ray Tune bookkeeping kept in the history (the rest of Tune's result keys are dropped).
TUNE_KEYS = ("training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "node_ip")
_DROP = {
    "config",
    "done",
    "should_checkpoint",
    "date",
    "hostname",
    "pid",
    "trial_id",
    "experiment_tag",
}


def _value(v: Any) -> Any:
    """A Parquet-friendly scalar: numpy to Python, tuples to lists, odd objects to text."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return v
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    return str(v)


def history_row(trial_id: str, result: dict) -> dict[str, Any]:
    row: dict[str, Any] = {"trial_id": trial_id}
    for key, value in result.items():
        if key in _DROP or key.startswith("config/"):
            continue
        if key.startswith("media/") and not isinstance(value, bytes):
            continue
        if key in TUNE_KEYS or isinstance(value, (int, float, bool, bytes, np.generic)) or key == "node_id":
            row[key] = _value(value)
    row.setdefault("iteration", row.get("training_iteration"))
    return row


def _is_accuracy(key: str) -> bool:
    return "acc" in key.rsplit("/", 1)[-1] or "_acc" in key or "/acc" in key


def to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows with heterogeneous keys -> one table (missing values null; all-null columns as
    strings so that every column has a type)."""
    if not rows:
        return pa.table({})
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    arrays, names = [], []
    for key in columns:
        values = [row.get(key) for row in rows]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = pa.array([None if v is None else str(v) for v in values])
        if pa.types.is_null(array.type):
            array = array.cast(pa.string())
        arrays.append(array)
        names.append(key)
    return pa.Table.from_arrays(arrays, names=names)


def write_table(table: pa.Table, location: Location, metadata: dict[str, str] | None = None) -> None:
    if metadata:
        table = table.replace_schema_metadata({f"orchestrator.{k}": v for k, v in metadata.items()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    location.write_bytes(buffer.getvalue())


def read_table(location: Location) -> pa.Table:
    return pq.read_table(io.BytesIO(location.read_bytes()))


def table_metadata(table: pa.Table) -> dict[str, Any]:
    """The ``orchestrator.*`` schema metadata of a results table (objectives decoded)."""
    raw = table.schema.metadata or {}
    meta = {
        k.decode()[len("orchestrator.") :]: v.decode()
        for k, v in raw.items()
        if k.startswith(b"orchestrator.")
    }
    if "objectives" in meta:
        meta["objectives"] = [tuple(o) for o in json.loads(meta["objectives"])]
    return meta


def outcome(status: str, iterations: int, budget: int, diverged: bool) -> str:
    if status == "ERROR":
        return "error"
    if diverged:
        return "diverged"
    if status in ("RUNNING", "PENDING", "PAUSED"):
        return "running" if status == "RUNNING" else status.lower()
    return "completed" if iterations >= budget else "early_stopped"


def trial_row(
    *,
    trial_id: str,
    status: str,
    config: dict,
    history: Sequence[dict[str, Any]],
    space: str,
    trainable: str,
    budget_key: str,
    checkpoint_path: str | None,
    num_failures: int = 0,
    error: str | None = None,
) -> dict[str, Any]:
    """One row of ``trials.parquet`` from a trial's config and its reports."""
    budget = int(config.get(budget_key, 0) or 0)
    last = history[-1] if history else {}
    iterations = int(last.get("iteration") or 0)
    diverged = bool(last.get("diverged", 0))
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "status": status,
        "outcome": outcome(status, iterations, budget, diverged),
        "space": space,
        "trainable": trainable,
        "iterations": iterations,
        "budget": budget,
        "wall_time_s": float(last.get("time_total_s") or 0.0),
        "checkpoint_path": checkpoint_path,
        "diverged": diverged,
        "num_failures": num_failures,
        "error": error,
    }
    for key, value in config.items():
        row[f"config/{key}"] = _value(value)
    for key, value in last.items():
        if key in ("trial_id",) or key.startswith("media/") or key in TUNE_KEYS:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[f"last/{key}"] = value
    for key in {k for r in history for k in r}:
        if not key.startswith("val/"):
            continue
        values = [r[key] for r in history if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if values:
            row[f"best/{key}"] = max(values) if _is_accuracy(key) else min(values)
    return row


def mark_pareto(rows: list[dict[str, Any]], objectives: Sequence[tuple[str, str]]) -> None:
    """Set ``pareto`` on rows: non-dominated among trials that completed their full budget."""
    if len(objectives) < 2:
        return
    eligible = [r for r in rows if r["outcome"] == "completed"]
    points = []
    for r in eligible:
        point = []
        for metric, mode in objectives:
            v = r.get(f"last/{metric}")
            v = -math.inf if v is None or not math.isfinite(v) else v
            point.append(v if mode == "max" else -v)
        points.append(point)
    front = {eligible[i]["trial_id"] for i in pareto_front(points)}
    for r in rows:
        r["pareto"] = r["trial_id"] in front


class ParquetCallback(Callback):
    """Keeps ``history.parquet`` and ``trials.parquet`` up to date during a search."""

    def __init__(
        self,
        experiment_uri: str,
        *,
        space: str,
        trainable: str,
        budget_key: str,
        objectives: Sequence[tuple[str, str]],
        flush_s: float | None = None,
    ):
        self.experiment_uri = experiment_uri
        self.space, self.trainable, self.budget_key = space, trainable, budget_key
        self.objectives = [tuple(o) for o in objectives]
        # Seconds between rewrites while trials run (finished trials are always written at once).
        self.flush_s = flush_s if flush_s is not None else float(os.environ.get(FLUSH_ENV, 10.0))
        self._init_state()

    def _init_state(self) -> None:
        self._history: dict[str, dict[int, dict[str, Any]]] = {}
        self._trials: dict[str, Any] = {}
        self._previous_trials: dict[str, dict[str, Any]] = {}
        self._last_flush = 0.0

    def __getstate__(self):  # the experiment state pickles callbacks: keep it small
        state = self.__dict__.copy()
        for key in ("_history", "_trials", "_previous_trials", "_last_flush"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_state()

    @property
    def location(self) -> Location:
        return Location.parse(self.experiment_uri)

    def setup(self, **info) -> None:
        """On a resumed search, start from what the interrupted driver wrote."""
        history = self.location.child(HISTORY_FILE)
        if history.exists():
            for row in read_table(history).to_pylist():
                row = {k: v for k, v in row.items() if v is not None}
                self._history.setdefault(row["trial_id"], {})[int(row.get("iteration") or 0)] = row
        trials = self.location.child(TRIALS_FILE)
        if trials.exists():
            for row in read_table(trials).to_pylist():
                self._previous_trials[row["trial_id"]] = row

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = history_row(trial.trial_id, result)
        self._history.setdefault(trial.trial_id, {})[int(row.get("iteration") or 0)] = row
        self._trials[trial.trial_id] = trial
        if time.monotonic() - self._last_flush > self.flush_s:
            self.flush()

    def on_step_end(self, iteration, trials, **info) -> None:
        for trial in trials:
            self._trials[trial.trial_id] = trial

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._trials[trial.trial_id] = trial
        self.flush()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._trials[trial.trial_id] = trial
        self.flush()

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            self._trials[trial.trial_id] = trial
        self.flush()

    def history_rows(self) -> list[dict[str, Any]]:
        return [row for tid in self._history for _, row in sorted(self._history[tid].items())]

    def trial_rows(self) -> list[dict[str, Any]]:
        rows = {tid: dict(row) for tid, row in self._previous_trials.items()}
        for tid, trial in self._trials.items():
            history = [row for _, row in sorted(self._history.get(tid, {}).items())]
            checkpoint = trial.checkpoint
            error = None
            if trial.status == "ERROR" and trial.error_file:
                error = _first_line_of_error(trial)
            rows[tid] = trial_row(
                trial_id=tid,
                status=trial.status,
                config=dict(trial.config),
                history=history,
                space=self.space,
                trainable=self.trainable,
                budget_key=self.budget_key,
                checkpoint_path=checkpoint.path if checkpoint else None,
                num_failures=trial.num_failures,
                error=error,
            )
        out = list(rows.values())
        mark_pareto(out, self.objectives)
        return out

    def metadata(self) -> dict[str, str]:
        """What a reader needs besides the rows (``orchestrator report`` uses nothing else)."""
        return {
            "space": self.space,
            "trainable": self.trainable,
            "budget_key": self.budget_key,
            "objectives": json.dumps(self.objectives),
        }

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        meta = self.metadata()
        write_table(to_table(self.history_rows()), self.location.child(HISTORY_FILE), meta)
        write_table(to_table(self.trial_rows()), self.location.child(TRIALS_FILE), meta)


def _first_line_of_error(trial) -> str | None:
    try:
        error = trial.get_error()
    except Exception:
        return None
    if error is None:
        return None
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__


def load_results(experiment: Location) -> tuple[pa.Table, pa.Table]:
    """``(trials, history)`` of an experiment."""
    trials, history = experiment.child(TRIALS_FILE), experiment.child(HISTORY_FILE)
    if not trials.exists():
        raise FileNotFoundError(f"no {TRIALS_FILE} in {experiment.uri}")
    return read_table(trials), read_table(history) if history.exists() else pa.table({})


def leaderboard(
    trials: Iterable[dict[str, Any]], objectives: Sequence[tuple[str, str]], top: int | None = None
) -> list[dict[str, Any]]:
    """Trials ranked for display: Pareto front first (multi-objective) then by the first
    objective's last value; trials that did not complete their budget after completed ones."""
    rows = list(trials)
    metric, mode = objectives[0]
    sign = 1.0 if mode == "max" else -1.0

    def key(r):
        v = r.get(f"last/{metric}")
        v = -math.inf if v is None or not math.isfinite(v) else sign * v
        return (r.get("outcome") != "completed", not r.get("pareto", False), -v)

    rows.sort(key=key)
    return rows[:top] if top else rows


def display_columns(rows: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, str]]) -> list[str]:
    """Trial, outcome, objectives, clean/robust accuracy, and the config keys that vary."""
    columns = ["trial_id", "outcome", "iterations"]
    for key in [f"last/{m}" for m, _ in objectives] + [
        "last/val/acc",
        "last/val/pgd_acc",
        "last/test/acc",
        "last/test/pgd_acc",
    ]:
        if key not in columns and any(key in r for r in rows):
            columns.append(key)
    if any(r.get("pareto") for r in rows):
        columns.append("pareto")
    for key in sorted({k for r in rows for k in r if k.startswith("config/")}):
        values = {repr(r.get(key)) for r in rows}
        if len(values) > 1:
            columns.append(key)
    return columns


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    return str(value)


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str = "table") -> str:
    """``table`` (aligned text), ``csv`` or ``json`` (one object per trial)."""
    if fmt == "json":
        import json

        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return json.dumps([{c: clean(r.get(c)) for c in columns} for r in rows], indent=1, default=str)
    if fmt == "csv":
        import csv

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        return out.getvalue().rstrip("\n")
    headers = [c.replace("config/", "").replace("last/", "") for c in columns]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
