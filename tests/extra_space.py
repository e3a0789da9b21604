"""The declaration of the out-of-tree trainable ``linear_extra`` (``tests/extra_trainable.py``),
torch-free: its search space, its catalog entry and the metric it adds. A package makes it
reachable from every command with an entry point in group ``orchestrator.spaces``::

    [project.entry-points."orchestrator.spaces"]
    linear_extra = "tests.extra_space"

(``tests/test_search_e2e.py`` installs such a package's metadata and runs the commands.)
"""

from __future__ import annotations

from search_spaces.spec import Objective, SpaceSpec
from trainables import metrics
from trainables.catalog import TrainableInfo

NAME = "linear_extra"
_MODULE = "tests.extra_trainable"

metrics.register(
    "train/weight_norm", metrics.Metric("norm", "", "L2 norm of the linear weights", "weight units")
)


def space(trial) -> dict:
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    return {}


TRAINABLE = TrainableInfo(
    NAME,
    _MODULE,
    "pass",
    ("train/loss", "train/weight_norm", "val/acc"),
    prepare=f"{_MODULE}:prepare",
    report_sections=(f"{_MODULE}:weight_section",),
    smoke={"noise_eval": False},
)
SPACE = SpaceSpec(
    NAME, NAME, space, Objective("val/acc", "max"), max_iterations=2, num_samples=2, description="test"
)
