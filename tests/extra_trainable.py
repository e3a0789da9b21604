"""A fourth trainable defined outside the packages: a linear classifier. Its declaration
(space, catalog entry, metric) is ``tests/extra_space.py``, reached through an entry point; that
is all it takes to search it, train it and report on it: nothing in ``orchestrator/``,
``trainables/`` or ``search_spaces/`` knows about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from tests.extra_space import NAME
from trainables.config import param
from trainables.data import BatchStream
from trainables.reporting import console_reporter
from trainables.steps import classifier_step, run_steps
from trainables.trial import StatefulProgram, TrainableSpec, TrialConfig, run_trial


@dataclass(frozen=True)
class LinearConfig(TrialConfig):
    trainable: ClassVar[str] = NAME
    budget_key: ClassVar[str] = "passes"

    passes: int = param(2, lo=1, hi=100, doc="passes over the training split")
    lr: float = param(1e-2, lo=1e-5, hi=1.0, doc="Adam learning rate")
    prepared: str = param("", doc="set by the prepare hook")


class LinearProgram(StatefulProgram):
    state_objects = ("classifier", "optimizer", "stream")
    state_values = ("images_seen",)

    def __init__(self, cfg, rt, data):
        self.cfg, self.rt = cfg, rt
        size = data.spec.channels * 32 * 32
        self.classifier = rt.module(nn.Sequential(nn.Flatten(), nn.Linear(size, data.spec.num_classes)))
        self.optimizer = torch.optim.Adam(self.classifier.parameters(), lr=cfg.lr)
        self.stream = BatchStream(data.train, cfg.batch_size, seed=cfg.seed)
        self.images_seen = 0

    def step(self, x, y):
        self.images_seen += len(y)
        out = classifier_step(self.classifier, self.optimizer, self.rt, [("clean", x, y, 1.0)])
        return {**out, "weight_norm": self.classifier[1].weight.norm()}

    def train_iteration(self, iteration):
        return run_steps(self.stream.epoch(), self.step)


SPEC = TrainableSpec(name=NAME, config_cls=LinearConfig, build=LinearProgram)


def train(config: dict) -> dict:
    return run_trial(SPEC, config, console_reporter(SPEC))


def prepare(cfg, store, echo) -> dict:
    """The hook run once on the driver: writes a file into the experiment's storage."""
    return {"prepared": store("extra/prepared.txt", b"prepared once")}


def weight_section(ctx) -> list[str]:
    """Its own report section: the weight norm per pass of the best trial."""
    rows = ctx.reports()
    plt = ctx.plt()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([r["iteration"] for r in rows], [r.get("train/weight_norm") for r in rows], "-o")
    ax.set_title(ctx.title(ctx.label("train/weight_norm")))
    name = ctx.save(fig, "weight_norm")
    return [f"![weight norm]({name})", ""]
