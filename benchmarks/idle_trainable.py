"""``idle``: a trial that sleeps ``seconds`` per iteration and reports a synthetic learning curve
(``val/score``, highest at x = y = 0.5), with the checkpoint every trial writes: what a search of
it costs is the driver's bookkeeping (``benchmarks/driver_scale.py``). Its validation and test
see a one-layer classifier on 8 synthetic images (run_trial evaluates every report)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from benchmarks.idle_space import NAME
from trainables.config import param
from trainables.trial import StatefulProgram, TrainableSpec, TrialConfig

#: What every idle trial evaluates: 8 clean images, no attack, no noise.
CHEAP = {
    "dataset": "synthetic",
    "eval_subset": 8,
    "robust_n": 8,
    "test_robust_n": 8,
    "fgsm_eps": (),
    "pgd_steps": 0,
    "apgd_steps": 0,
    "test_apgd_steps": 0,
    "test_square_queries": 0,
    "noise_eval": False,
    "train_subset": 16,
    "batch_size": 8,
    "device": "cpu",
    "channels_last": False,
}


@dataclass(frozen=True)
class IdleConfig(TrialConfig):
    trainable: ClassVar[str] = NAME
    budget_key: ClassVar[str] = "iterations"

    iterations: int = param(1, lo=1, hi=100_000, doc="reports per trial")
    seconds: float = param(1.0, lo=0.0, hi=3600.0, doc="seconds slept per iteration")
    x: float = param(0.5, lo=0.0, hi=1.0, doc="a searched parameter")
    y: float = param(0.5, lo=0.0, hi=1.0, doc="a searched parameter")


class IdleProgram(StatefulProgram):
    state_objects = ("classifier",)
    state_values = ("images_seen",)

    def __init__(self, cfg: IdleConfig, rt, data):
        self.cfg = cfg
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(data.val.x[0].numel(), data.spec.num_classes))
        self.images_seen = 0

    def train_iteration(self, iteration: int) -> dict[str, torch.Tensor]:
        time.sleep(self.cfg.seconds)
        return {}

    def extra_metrics(self, iteration: int, final: bool) -> dict[str, float]:
        cfg = self.cfg
        quality = 1.0 - ((cfg.x - 0.5) ** 2 + (cfg.y - 0.5) ** 2)
        rss_mb = int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
        return {
            "val/score": quality * (1.0 - 0.5 ** (iteration / cfg.iterations)),
            "worker/rss_mb": rss_mb,
        }


SPEC = TrainableSpec(name=NAME, config_cls=IdleConfig, build=IdleProgram)
