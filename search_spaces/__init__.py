"""Optuna define-by-run search spaces, one per trainable, and their registry.

Each space is a module-level function of an Optuna trial that only calls ``trial.suggest_*``
and plain ``if``s and returns a dict of constants (module-level, so that Ray Tune can pickle the
searcher). Every suggested name is a parameter of the trainable's config. The registry says
which trainable a space drives, what it optimises (validation keys only: a search never sees
the test split), its default budget, and its priors: known-good configurations that every
search runs first (``--no-priors`` searches blind), so no search starts worse than the recipe
the project's docs print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search_spaces import adaptive_ratio, classic, wgan_gp
from search_spaces.priors import Prior


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "max" or "min"

    def __post_init__(self) -> None:
        if not self.metric.startswith("val/"):
            raise ValueError(f"objective {self.metric!r}: searches optimise validation keys only")
        if self.mode not in ("max", "min"):
            raise ValueError(f"objective mode {self.mode!r} must be max or min")


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


SPACES: dict[str, SpaceSpec] = {
    "classic": SpaceSpec(
        "classic",
        "classic",
        classic.space,
        Objective("val/apgd_acc", "max"),
        max_iterations=10,
        num_samples=20,
        description="Classic Classifier with optional FGSM/PGD adversarial training (seed 000/001)",
        priors=classic.PRIORS,
    ),
    "wgan_gp": SpaceSpec(
        "wgan_gp",
        "wgan_gp",
        wgan_gp.space,
        Objective("val/acc", "max"),
        max_iterations=20,
        num_samples=12,
        description="Robust Classifier trained alongside a conditional WGAN-GP (seed 000)",
        priors=wgan_gp.PRIORS,
    ),
    "adaptive_ratio": SpaceSpec(
        "adaptive_ratio",
        "adaptive_ratio",
        adaptive_ratio.space,
        Objective("val/apgd_acc", "max"),
        max_iterations=20,
        num_samples=16,
        description="Perturbation GAN with fixed / stepped / adaptive training ratio (seed 001)",
        priors=adaptive_ratio.PRIORS,
    ),
}


def get_space(name: str) -> SpaceSpec:
    try:
        return SPACES[name]
    except KeyError:
        raise KeyError(f"unknown space {name!r}; choose from {', '.join(SPACES)}") from None
