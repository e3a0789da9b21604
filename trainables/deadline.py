"""A search's time budget (``--time-budget``), owned in one place: the file that carries it, its
constants, and each trial's decision to end before it.

:class:`TimeBudget` owns ``deadline.json`` in the experiment: the driver writes the deadline (unix
seconds), the whole budget, the seconds earlier drivers spent and when this driver started
(a resume gets what is left), and, once no new trial will start, ``threads``: the CPU threads
each trial still running may use. Trials only read it.

:class:`TrialClock` is a trial's own clock (seconds trained and validated, carried in its
checkpoints) and the one place where an iteration decides to be the last: at the trial's
iteration budget, or when the next iteration and the test evaluation would no longer fit before
the deadline (:class:`Pace`), so that the trial ends tested and checkpointed instead of being cut
off without either.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow.fs as pafs

#: The file in the experiment folder.
DEADLINE_FILE = "deadline.json"
#: The share of the budget in which new trials start; after it, running trials use the rest.
EXPLORE_SHARE = 0.75
#: Ray Tune's own time budget, a backstop behind the trials' deadline: budget x this + slack.
BACKSTOP_FACTOR, BACKSTOP_SLACK_S = 1.25, 300.0
#: The test evaluation's cost over its estimate from a robust validation: a margin over the
#: estimate's spread (measured in docs/evaluation.md, "the deadline ... reserves its cost").
TEST_COST_FACTOR = 1.1
#: The most an iteration's training is taken to grow over the one before it (the adaptive
#: generator:classifier ratio grows a cycle by about 1.5x per cycle).
MAX_GROWTH = 3.0


class TimeBudget:
    """``deadline.json`` at ``uri`` (a local path or a pyarrow URI; empty: no budget)."""

    def __init__(self, uri: str, clock=time.time):
        self.uri, self.clock = uri, clock
        self.record: dict[str, Any] = {}

    @staticmethod
    def backstop(budget_s: float) -> float:
        """Ray Tune's ``time_budget_s`` behind the deadline (0: none)."""
        return budget_s * BACKSTOP_FACTOR + BACKSTOP_SLACK_S if budget_s else 0.0

    def read(self) -> dict[str, Any]:
        """What the file holds now (empty: no file, or not a record); kept as ``record``."""
        self.record = {}
        if self.uri:
            try:
                fs, path = self._fs()
                with fs.open_input_stream(path) as f:
                    record = json.loads(f.read().decode())
                self.record = record if isinstance(record, dict) else {}
            except (FileNotFoundError, OSError, ValueError):
                pass
        return self.record

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.FileSystem.from_uri(self.uri) if "://" in self.uri else (pafs.LocalFileSystem(), self.uri)

    def _write(self, record: dict[str, Any]) -> None:
        data = json.dumps(record, indent=2, sort_keys=True).encode()
        fs, path = self._fs()
        if isinstance(fs, pafs.LocalFileSystem):  # readers never see half a file
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:  # an object store's put is atomic
            with fs.open_output_stream(path) as f:
                f.write(data)
        self.record = record

    # The driver's side.

    def start(self, budget_s: float, history: Sequence[dict] = (), now: float | None = None) -> float:
        """Write the deadline of a driver starting now (a resume continues the earlier drivers'
        budget; ``history``: the experiment's reports, for a driver that was killed); the deadline."""
        now = self.clock() if now is None else now
        record, spent = self.read(), 0.0
        if record:
            spent = float(record.get("spent_s", 0.0))
            started = record.get("run_started")
            if started is not None:  # the last driver did not end cleanly: count up to its last report
                stamps = [float(r["timestamp"]) for r in history if r.get("timestamp")]
                spent += max([s - float(started) for s in stamps if s >= float(started)], default=0.0)
        deadline = now + max(budget_s - spent, 0.0)
        self._write({"deadline": deadline, "budget_s": budget_s, "spent_s": spent, "run_started": now})
        return deadline

    def stop(self, now: float | None = None) -> None:
        """Add this driver's seconds to what the budget has spent."""
        now = self.clock() if now is None else now
        record = self.read()
        if not record:
            return
        started = record.pop("run_started", None)
        if started is not None:
            record["spent_s"] = float(record.get("spent_s", 0.0)) + max(now - float(started), 0.0)
        self._write(record)

    def exploring(self, budget_s: float, now: float | None = None) -> bool:
        """Whether a new trial may still start (the first ``EXPLORE_SHARE`` of the budget)."""
        left = self.seconds_left(now)
        return left is None or left > (1.0 - EXPLORE_SHARE) * budget_s

    def share_cores(self, threads: int) -> None:
        """Give each running trial ``threads`` CPU threads (once exploring is over)."""
        record = self.read()
        if record and record.get("threads") != threads:
            self._write({**record, "threads": threads})

    # The trials' side.

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds to the deadline (negative once passed), read from the file now; None: none."""
        try:
            return float(self.read()["deadline"]) - (self.clock() if now is None else now)
        except (KeyError, TypeError, ValueError):
            return None

    def cpu_threads(self) -> int | None:
        """The CPU threads the driver gives each running trial, as last read; None: unchanged."""
        threads = self.record.get("threads")
        return int(threads) if isinstance(threads, int) and threads > 0 else None


class Pace:
    """What the rest of a trial costs, from what this process measured: the next iteration's
    training (the last one's, times its growth over the one before, between 1 and
    :data:`MAX_GROWTH`), a robust validation (the last one's) and the test evaluation.

    A trial whose cycles grow (``adaptive_ratio``'s adaptive schedule: 632 s, then 986 s, then
    1344 s) overran the deadline by 13 minutes when the next iteration was assumed to cost what the
    last one did."""

    def __init__(self):
        self.train_s: list[float] = []
        self.robust_val_s = 0.0
        self.test_s = 0.0

    def trained(self, seconds: float) -> None:
        self.train_s = [*self.train_s[-1:], seconds]

    def validated(self, seconds: float, test_s: float) -> None:
        """A robust validation took ``seconds``; the test is estimated at ``test_s``."""
        self.robust_val_s, self.test_s = seconds, test_s

    def next_iteration_s(self) -> float:
        if not self.train_s:
            return self.robust_val_s
        last = self.train_s[-1]
        growth = last / self.train_s[0] if len(self.train_s) == 2 and self.train_s[0] > 0 else 1.0
        return last * min(max(growth, 1.0), MAX_GROWTH) + self.robust_val_s

    def ends_now(self, left: float | None) -> bool:
        """Whether the iteration just validated must be the last (``left``: seconds to the
        deadline, None: none): the next one and the test would not fit."""
        return left is not None and left < self.next_iteration_s() + self.test_s


def test_estimate(robust_eval_s: float, test_images: int, val_images: int, steps_ratio: float = 1.0) -> float:
    """Seconds the test evaluation will take, from the last robust validation's seconds, how
    many images each attacks and how many attack steps the test protocol spends per image
    against validation's (``steps_ratio``)."""
    per_image = max(steps_ratio, 1.0)
    return TEST_COST_FACTOR * robust_eval_s * per_image * max(1.0, test_images / max(val_images, 1))


class TrialClock:
    """A trial's own clock and its end (see the module docstring).

    ``seconds``: the trial's training and validation so far (ASHA's rungs in seconds read it as
    ``time/trial_s``); ``reported_at``: that clock at the model of its last report."""

    def __init__(self, budget: TimeBudget, iterations: int, seconds: float = 0.0, reported_at: float = 0.0):
        self.budget, self.iterations = budget, iterations
        self.seconds, self.reported_at = seconds, reported_at
        self.pace = Pace()
        self.ended_by_deadline = False
        self._left: float | None = None

    def begin(self, it: int) -> float:
        """Before iteration ``it`` trains: the deadline (and the driver's ``threads``) read
        again, so that a resumed search's new deadline reaches restored trials; the share of the
        trial's budget it will have spent halfway through ``it``, which the schedules follow: of
        its iterations, or, before a deadline, of its time (trained and validated over that plus
        what is left once the test is reserved)."""
        self._left = self.budget.seconds_left()
        progress = (it - 0.5) / max(self.iterations, 1)
        if self._left is not None:
            usable = max(self._left - self.pace.test_s, 0.0)
            middle = self.seconds + 0.5 * (self.pace.train_s[-1] if self.pace.train_s else 0.0)
            progress = max(progress, middle / max(self.seconds + usable, 1e-9))
        return min(progress, 1.0)

    def cpu_threads(self) -> int | None:
        return self.budget.cpu_threads()

    def trained(self, seconds: float) -> float:
        """Iteration's training took ``seconds``: the clock at the model it produced."""
        self.pace.trained(seconds)
        return self.seconds + seconds

    def validated(self, trained_at: float, eval_s: float) -> None:
        """The iteration's model (at ``trained_at``) was validated in ``eval_s``: reported."""
        self.seconds, self.reported_at = trained_at + eval_s, trained_at

    def is_last(self, it: int) -> bool:
        """The one decision to end: iteration ``it``, trained and validated, is the last at the
        trial's budget, once the deadline has passed, or when the next iteration and the test
        would not fit before it."""
        if it >= self.iterations:
            return True
        self._left = self.budget.seconds_left()
        left = self._left
        self.ended_by_deadline = left is not None and (left <= 0 or self.pace.ends_now(left))
        return self.ended_by_deadline
