"""What a search space declares: its trainable, objective, budget and priors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search_spaces.priors import Prior


@dataclass(frozen=True)
class Objective:
    """A validation metric a search optimises. Its direction has one source, the metric
    registry (``trainables.metrics``): ``mode`` may be left out, and a ``mode`` that disagrees
    with the registered direction is an error."""

    metric: str
    mode: str = ""  # "max" or "min"; "" = the registered direction

    def __post_init__(self) -> None:
        from trainables import metrics

        if not self.metric.startswith("val/"):
            raise ValueError(f"objective {self.metric!r}: searches optimise validation keys only")
        direction = metrics.describe(self.metric).direction
        if not self.mode:
            object.__setattr__(self, "mode", direction)
        if self.mode not in ("max", "min"):
            raise ValueError(f"objective {self.metric!r}: mode {self.mode!r} must be max or min")
        if direction and self.mode != direction:
            raise ValueError(
                f"objective {self.metric!r}: mode {self.mode!r}, but the metric registry says {direction!r}"
            )


#: The multi-objective search of every space: clean vs robust validation accuracy (APGD-CE then
#: APGD-DLR, which gradient masking does not fool as easily as PGD-40; see trainables/evaluation.py).
PARETO = (Objective("val/acc", "max"), Objective("val/apgd_acc", "max"))


@dataclass(frozen=True)
class SpaceSpec:
    name: str
    trainable: str
    space: Callable[[Any], dict[str, Any]]
    objective: Objective
    #: Default budget: iterations (epochs / cycles / iterations) per trial and trials.
    max_iterations: int
    num_samples: int
    description: str
    pareto: tuple[Objective, ...] = PARETO
    #: Run first by every search of the space (Optuna enqueued trials), unless ``--no-priors``.
    priors: tuple[Prior, ...] = ()

    def objectives(self, kind: str) -> tuple[Objective, ...]:
        """``single``: the space's metric; ``pareto``: clean and robust validation accuracy."""
        if kind == "single":
            return (self.objective,)
        if kind == "pareto":
            return self.pareto
        raise ValueError(f"unknown objective {kind!r}; choose single or pareto")
