"""What one row of the results tables means, with one owner: a history row from a report,
a trial's row (outcome, last and best values, training time) from its config and reports, and
what a row means beyond its own values (``feasible`` under the constraint, the masking flags,
the Pareto front), set the same way by the writer and by every reader. No Ray, no torch here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestrator.pareto import pareto_front
from orchestrator.rules import is_feasible, masking_flags
from trainables import metrics as metric_registry
from trainables.metrics import RESTORE_NOTE

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
#: The status of a trial that was running or pending when the user stopped the search (Ray
#: Tune's own status would read TERMINATED); ``orchestrator resume`` continues it.
INTERRUPTED = "INTERRUPTED"


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
        if key == RESTORE_NOTE and isinstance(value, str):
            row[key] = value
            continue
        if key in TUNE_KEYS or isinstance(value, (int, float, bool, bytes, np.generic)) or key == "node_id":
            row[key] = _value(value)
    row.setdefault("iteration", row.get("training_iteration"))
    return row


def outcome(status: str, iterations: int, budget: int, diverged: bool, deadline_end: bool = False) -> str:
    """A trial's outcome; one that the search's deadline ended (tested and checkpointed, see
    ``trainables.deadline``) ran its course: ``completed``."""
    if status == "ERROR":
        return "error"
    if status == INTERRUPTED:
        return "interrupted"
    if diverged:
        return "diverged"
    if status in ("RUNNING", "PENDING", "PAUSED"):
        return "running" if status == "RUNNING" else status.lower()
    return "completed" if iterations >= budget or deadline_end else "early_stopped"


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
        "outcome": outcome(status, iterations, budget, diverged, bool(last.get("deadline_end", 0))),
        "space": space,
        "trainable": trainable,
        "iterations": iterations,
        "budget": budget,
        "wall_time_s": float(last.get("time_total_s") or 0.0),
        # Seconds of training (validation and test excluded) over every reported iteration.
        "train_time_s": float(sum(r.get("time/train_s") or 0.0 for r in history)),
        "checkpoint_path": checkpoint_path,
        "diverged": diverged,
        "num_failures": num_failures,
        "error": error,
        # A damaged checkpoint skipped on a restore (trainables.reporting.load_first_readable).
        RESTORE_NOTE: next((r[RESTORE_NOTE] for r in reversed(history) if r.get(RESTORE_NOTE)), None),
    }
    for key, value in config.items():
        row[f"config/{key}"] = _value(value)
    for key, value in last.items():
        if key in ("trial_id",) or key.startswith("media/") or key in TUNE_KEYS:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[f"last/{key}"] = value
    for key in {k for r in history for k in r}:
        if key.startswith("val/"):
            best = metric_registry.best(key, (r.get(key) for r in history))
            if best is not None:
                row[f"best/{key}"] = best
    return row


def derive(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Set what a trial row means beyond its own values, the same for the writer (which stores
    it, so ``trials.parquet`` read with plain pyarrow agrees) and every reader: ``feasible``
    under the search's ``--min-clean`` constraint, the gradient-masking flags, and the Pareto
    front of a multi-objective search (feasible full-budget trials only; it depends on every
    row, so it is set over all of them)."""
    constraint = meta.get("constraint")
    for r in rows:
        if constraint:
            r["feasible"] = is_feasible(r, constraint)
        flags = masking_flags(r)
        r["masking"] = "; ".join(flags) if flags else None
    if len(meta.get("objectives") or []) > 1:
        mark_pareto(rows, meta["objectives"])


def mark_pareto(rows: list[dict[str, Any]], objectives: Sequence[tuple[str, str]]) -> None:
    """Set ``pareto`` on rows: non-dominated among the feasible trials (``feasible`` not False)
    that completed their full budget."""
    if len(objectives) < 2:
        return
    eligible = [r for r in rows if r["outcome"] == "completed" and r.get("feasible") is not False]
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
