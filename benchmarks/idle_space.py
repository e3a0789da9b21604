"""The declaration of ``idle``, the trainable of ``benchmarks/driver_scale.py``: a trial that does
no work (it sleeps and reports a synthetic learning curve), so that a search of it measures what
the driver costs. Registered like any plugin (``search_spaces.register``); torch-free."""

from __future__ import annotations

from typing import Any

from search_spaces.spec import Objective, SpaceSpec
from trainables import metrics
from trainables.catalog import TrainableInfo

NAME = "idle"
MODULE = "benchmarks.idle_trainable"
#: The objective: a synthetic curve the searcher can rank (no model is evaluated).
METRIC = "val/score"
metrics.register(
    METRIC, metrics.Metric("score", "max", "synthetic score (driver benchmark)", "fraction", 0.0)
)


def space(trial) -> dict[str, Any]:
    trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_float("y", 0.0, 1.0)
    return {}


TRAINABLE = TrainableInfo(NAME, MODULE, "iteration", (METRIC,))
SPACE = SpaceSpec(
    NAME,
    NAME,
    space,
    Objective(METRIC, "max"),
    max_iterations=1,
    num_samples=10,
    description="driver benchmark",
)
