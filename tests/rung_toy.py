"""A trainable whose validation score is a parameter, for the scheduler-state resume test: its
space's priors fix the order and the scores of the trials, so which trial ASHA must stop is
known in advance. ``python -m tests.rung_toy STORAGE NAME`` runs its search as a driver."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import ClassVar

from search_spaces import SPACES, Objective, SpaceSpec
from search_spaces.priors import Prior
from tests.extra_trainable import LinearConfig, LinearProgram
from trainables import catalog, metrics
from trainables.config import param
from trainables.reporting import console_reporter
from trainables.trial import TrainableSpec, run_trial

NAME = "rung_toy"
#: The trials in the order they run (one at a time) and the score each reports every pass.
SCORES = (0.9, 0.8, 0.3, 0.5)


@dataclass(frozen=True)
class ScoreConfig(LinearConfig):
    trainable: ClassVar[str] = NAME

    score: float = param(0.5, lo=0.0, hi=1.0, doc="what the trial reports as val/score")
    sleep_s: float = param(0.0, lo=0.0, hi=60.0, doc="seconds each pass waits first")


class ScoreProgram(LinearProgram):
    def train_iteration(self, iteration):
        time.sleep(self.cfg.sleep_s)
        return super().train_iteration(iteration)

    def extra_metrics(self, iteration, final):
        return {"val/score": self.cfg.score}


SPEC = TrainableSpec(name=NAME, config_cls=ScoreConfig, build=ScoreProgram)


def train(config: dict) -> dict:
    return run_trial(SPEC, config, console_reporter(SPEC))


def space(trial) -> dict:
    trial.suggest_float("score", 0.0, 1.0)
    return {}


def register() -> SpaceSpec:
    """Register the trainable and its metric; its space, to put into ``SPACES``."""
    catalog.register(catalog.TrainableInfo(NAME, __name__, "pass", ("val/score",)))
    metrics.register("val/score", metrics.Metric("score", "max", "toy score", "fraction", worst=0.0))
    return SpaceSpec(
        NAME,
        NAME,
        space,
        Objective("val/score", "max"),
        max_iterations=3,
        num_samples=len(SCORES),
        description="scheduler-state test",
        priors=tuple(Prior(f"score{s}", {"score": s}) for s in SCORES),
    )


def settings(storage: str, name: str):
    from orchestrator.settings import SearchSettings

    return SearchSettings(
        space=NAME,
        name=name,
        storage=storage,
        max_concurrent=1,
        num_cpus=2,
        scheduler="asha",
        wandb_mode="offline",
        config={
            "dataset": "synthetic",
            "train_subset": 128,
            "batch_size": 32,
            "eval_subset": 32,
            "robust_n": 8,
            "test_robust_n": 8,
            "pgd_steps": 1,
            "apgd_steps": 1,
            "test_apgd_steps": 1,
            "test_apgd_targets": 1,
            "test_square_queries": 5,
            "noise_eval": False,
            "sleep_s": 2.0,
        },
    )


if __name__ == "__main__":
    from orchestrator.plan import plan_search
    from orchestrator.search import run_search
    from tests import rung_toy  # the module by its name, not __main__, for the Ray workers

    SPACES[NAME] = rung_toy.register()
    run_search(plan_search(rung_toy.settings(sys.argv[1], sys.argv[2])))
