"""``--time-budget``: the search's deadline, kept in the experiment, and how a resume continues it.

The driver writes ``deadline.json`` (``trainables.deadline``) before it starts Ray: the deadline
(unix seconds), the whole budget, the seconds earlier drivers spent, and when this driver
started. Trials read it and end themselves before the deadline with their test evaluation and
final checkpoint; the searcher proposes no new trial in the last ``1 - EXPLORE_SHARE`` of the
budget, so what runs then trains until the deadline, and ``orchestrator.core_share.CoreShare`` lets the trials
left then share the machine's cores (the last rung gets every core). A resume gets what is left
of the budget:
the seconds spent are added up when a driver ends, and for a driver that was killed, up to the
last result it recorded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from orchestrator.storage import Location
from trainables.deadline import read_deadline

DEADLINE_FILE = "deadline.json"
#: The share of the budget in which new trials start; after it, running trials use the rest.
EXPLORE_SHARE = 0.75
#: Ray Tune's own time budget, a backstop behind the trials' deadline: budget x this + slack.
BACKSTOP_FACTOR, BACKSTOP_SLACK_S = 1.25, 300.0


def start(experiment: Location, budget_s: float, history: Sequence[dict[str, Any]] = (), now=None) -> float:
    """Write the deadline of a driver starting now (a resume continues the earlier drivers'
    budget; ``history``: the experiment's reports, for a driver that was killed); the deadline."""
    now = time.time() if now is None else now
    target = experiment.child(DEADLINE_FILE)
    spent = 0.0
    if target.exists():
        record = target.read_json()
        spent = float(record.get("spent_s", 0.0))
        started = record.get("run_started")
        if started is not None:  # the last driver did not end cleanly: count up to its last report
            stamps = [float(r["timestamp"]) for r in history if r.get("timestamp")]
            spent += max([s - float(started) for s in stamps if s >= float(started)], default=0.0)
    deadline = now + max(budget_s - spent, 0.0)
    target.write_json({"deadline": deadline, "budget_s": budget_s, "spent_s": spent, "run_started": now})
    return deadline


def stop(experiment: Location, now=None) -> None:
    """Add this driver's seconds to what the budget has spent."""
    now = time.time() if now is None else now
    target = experiment.child(DEADLINE_FILE)
    if not target.exists():
        return
    record = target.read_json()
    started = record.pop("run_started", None)
    if started is not None:
        record["spent_s"] = float(record.get("spent_s", 0.0)) + max(now - float(started), 0.0)
    target.write_json(record)


def exploring(deadline_uri: str, budget_s: float, now=None) -> bool:
    """Whether a new trial may still start (the first ``EXPLORE_SHARE`` of the budget)."""
    deadline = read_deadline(deadline_uri)
    if deadline is None:
        return True
    now = time.time() if now is None else now
    return deadline - now > (1.0 - EXPLORE_SHARE) * budget_s


def backstop(budget_s: float) -> float:
    """Ray Tune's ``time_budget_s`` behind the deadline (0: none)."""
    return budget_s * BACKSTOP_FACTOR + BACKSTOP_SLACK_S if budget_s else 0.0
