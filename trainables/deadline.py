"""A search's deadline as its trials see it: they end themselves before it, test evaluation and
final checkpoint included, instead of being cut off without either.

``orchestrator search --time-budget`` writes ``deadline.json`` (``{"deadline": unix seconds}``)
into the experiment and names it in every trial's ``deadline_file``; ``orchestrator resume``
rewrites it with what was left of the budget. A trial reads it in each iteration (so a resumed
search's new deadline reaches trials restored from their checkpoints): before training (a passed
deadline makes the iteration the last), and after validation, where the iteration becomes the
last, tested at once, when the next one and the test evaluation would no longer fit (``Pace``:
the next iteration's training extrapolated from how the last two grew, a robust validation, the
test). Once no new
trial will start, the driver also writes ``threads``: the CPU threads each trial still running
may use, so that the last trials get every core (``orchestrator.time_budget.CoreShare``).
"""

from __future__ import annotations

import json
import time

import pyarrow.fs as pafs

#: The test evaluation's cost relative to one robust validation, per attacked image and attack
#: step (it adds clean accuracy on the whole test split): a margin over the estimate's spread.
#: Measured on the README's main job (CPU, learned attacker, 500 test images, APGD-CE + APGD-T
#: over 9 classes at 25 steps, then Square-1,000 counted 0.2 steps a query; 2026-12-07, commit
#: 4b9990d): over its last four cycles the estimate with factor 1 read 116 to 131 s for a test
#: that took 124 s (a validation's seconds vary by 10%, and the estimate multiplies them by
#: about 48); 1.1 reads 127 to 144 s. Factor 2 once left two of ten minutes unused.
TEST_COST_FACTOR = 1.1


def read_record(uri: str) -> dict:
    """What ``uri`` (a local path or a pyarrow URI) holds; empty when there is no such file."""
    if not uri:
        return {}
    try:
        fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
        with fs.open_input_stream(path) as f:
            record = json.loads(f.read().decode())
    except (FileNotFoundError, OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def read_deadline(uri: str) -> float | None:
    """The deadline in ``uri``, or None (no file, no deadline)."""
    try:
        return float(read_record(uri)["deadline"])
    except (KeyError, TypeError, ValueError):
        return None


class Deadline:
    """When a trial must stop (see module docstring)."""

    def __init__(self, uri: str, clock=time.time):
        self.uri, self.clock = uri, clock
        self.record: dict = {}

    def cpu_threads(self) -> int | None:
        """The CPU threads the driver gives each running trial (``threads``, written once no new
        trial will start: the trials left share the cores), as last read; None: unchanged."""
        threads = self.record.get("threads")
        return int(threads) if isinstance(threads, int) and threads > 0 else None

    def seconds_left(self) -> float | None:
        """Seconds to the deadline (negative once passed), read from the driver's file now;
        None: no deadline."""
        self.record = read_record(self.uri)
        try:
            return float(self.record["deadline"]) - self.clock()
        except (KeyError, TypeError, ValueError):
            return None


#: The most an iteration's training is taken to grow over the one before it (the adaptive
#: generator:classifier ratio grows k, and with it a cycle, by about 1.5x per cycle).
MAX_GROWTH = 3.0


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
