"""A search's deadline as its trials see it: they end themselves before it, test evaluation and
final checkpoint included, instead of being cut off without either.

``orchestrator search --time-budget`` writes ``deadline.json`` (``{"deadline": unix seconds}``)
into the experiment and names it in every trial's ``deadline_file``; ``orchestrator resume``
rewrites it with what was left of the budget. A trial reads it before each iteration (so a
resumed search's new deadline reaches trials restored from their checkpoints) and makes the
iteration its last when another one and the test evaluation would no longer fit. Once no new
trial will start, the driver also writes ``threads``: the CPU threads each trial still running
may use, so that the last trials get every core (``orchestrator.time_budget.CoreShare``).
"""

from __future__ import annotations

import json
import time

import pyarrow.fs as pafs

#: The test evaluation's cost relative to one robust validation, per attacked image and attack
#: step (it adds clean accuracy on the whole test split). Measured on the README's main job (CPU,
#: learned attacker, 500 test images, APGD-CE + APGD-T over 9 classes at 25 steps): the test took
#: 63 s where this estimate with factor 1 says 94 s, so 1 is still on the safe side; the factor 2
#: it had reserved 187 s and ended that trial with two of its ten minutes unused.
TEST_COST_FACTOR = 1.0


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

    def last_iteration(self, iteration_s: float | None, test_s: float) -> bool:
        """Whether the iteration about to start must be the last: the deadline has passed, or
        this iteration, one more and the test evaluation (``iteration_s``, ``test_s``: their
        estimated seconds; None before the first iteration of this process) would not fit."""
        self.record = read_record(self.uri)
        try:
            deadline = float(self.record["deadline"])
        except (KeyError, TypeError, ValueError):
            return False
        left = deadline - self.clock()
        if iteration_s is None:
            return left <= 0
        return left < 2 * iteration_s + test_s


def test_estimate(robust_eval_s: float, test_images: int, val_images: int, steps_ratio: float = 1.0) -> float:
    """Seconds the test evaluation will take, from the last robust validation's seconds, how
    many images each attacks and how many attack steps the test protocol spends per image
    against validation's (``steps_ratio``)."""
    per_image = max(steps_ratio, 1.0)
    return TEST_COST_FACTOR * robust_eval_s * per_image * max(1.0, test_images / max(val_images, 1))
