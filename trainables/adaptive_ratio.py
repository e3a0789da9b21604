"""``adaptive_ratio``: seed 001's perturbation GAN with a generator:classifier training ratio.

The classifier (Classic architecture) is first pre-trained on clean images for
``pretrain_epochs``. Then every cycle (one iteration):

1. the classifier is frozen (eval mode) and the perturbation generator takes
   ``k * cycle_steps`` steps minimising the classifier's mean probability of the true class on
   perturbed images (the generator loss; it pushes the classifier towards being wrong);
2. the generator is frozen and the classifier takes ``cycle_steps`` steps on batches that mix
   clean images (fraction ``clean_frac``) with images perturbed by the generator, all with their
   true labels.

k follows the ratio schedule: ``fixed``, ``stepped`` or ``adaptive`` (held so that the generator
loss stays under ``target_gen_loss``). Perturbations are bounded by ``gen_eps`` on the [0, 1]
pixel scale. The seed's generator allowed 0.5, which lets it move every pixel to mid-grey and
erase the digit; the default is the evaluation radius 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trainables.config import param
from trainables.data import BatchStream, Data
from trainables.evaluation import predict
from trainables.media import prediction_grid
from trainables.models import ClassicClassifier, PerturbationGenerator
from trainables.reporting import default_reporter
from trainables.runtime import Runtime
from trainables.schedules import SCHEDULES, adaptive_k, stepped_k, validate_steps
from trainables.steps import Meter, classifier_step, perturbation_step, run_steps
from trainables.trial import StatefulProgram, TrainableSpec, TrialConfig, run_trial


@dataclass(frozen=True)
class AdaptiveRatioConfig(TrialConfig):
    trainable: ClassVar[str] = "adaptive_ratio"
    budget_key: ClassVar[str] = "cycles"

    cycles: int = param(20, lo=1, hi=100_000, doc="generator/classifier cycles (one report each)")
    pretrain_epochs: int = param(1, lo=0, hi=100, doc="clean pre-training epochs of the classifier")
    cls_lr: float = param(1e-3, lo=1e-7, hi=1.0, doc="classifier Adam learning rate")
    gen_lr: float = param(1e-3, lo=1e-7, hi=1.0, doc="generator Adam learning rate")
    gen_eps: float = param(0.3, lo=0.001, hi=1.0, doc="perturbation bound, [0,1] pixel scale")
    schedule: str = param("fixed", choices=SCHEDULES, doc="ratio schedule")
    k: int = param(2, lo=1, hi=100_000, doc="fixed k, and the adaptive schedule's first k")
    k_steps: tuple[tuple[int, int], ...] = param(
        ((1, 6), (8, 8), (15, 12)), doc="stepped schedule as 'cycle:k,...' (seed: 6 -> 8 -> 12)"
    )
    target_gen_loss: float = param(0.6, lo=0.0, hi=1.0, doc="adaptive: keep the generator loss under this")
    k_min: int = param(1, lo=1, hi=100_000, doc="adaptive: smallest k")
    k_max: int = param(1000, lo=1, hi=100_000, doc="adaptive: largest k (seed saw k > 700)")
    k_factor: float = param(1.5, lo=1.01, hi=10.0, doc="adaptive: multiplicative change of k")
    cycle_steps: int = param(
        50, lo=1, hi=1_000_000, doc="classifier steps per cycle (generator: k times as many)"
    )
    clean_frac: float = param(0.5, lo=0.0, hi=1.0, doc="fraction of clean images in classifier batches")

    def validate(self) -> None:
        super().validate()
        if self.schedule == "stepped":
            validate_steps(self.k_steps)
        if self.k_min > self.k_max:
            raise ValueError(f"k_min={self.k_min} is above k_max={self.k_max}")
        if self.schedule == "adaptive" and not self.k_min <= self.k <= self.k_max:
            raise ValueError(f"k={self.k} must lie within [k_min, k_max] = [{self.k_min}, {self.k_max}]")


class AdaptiveRatioProgram(StatefulProgram):
    state_objects = ("classifier", "perturber", "cls_opt", "gen_opt", "stream")
    state_values = ("pretrained", "k", "images_seen")

    def __init__(self, cfg: AdaptiveRatioConfig, rt: Runtime, data: Data):
        self.cfg, self.rt, self.data = cfg, rt, data
        self.classifier = rt.module(ClassicClassifier(data.spec.channels, data.spec.num_classes))
        self.perturber = rt.module(PerturbationGenerator(data.spec.channels, eps=cfg.gen_eps))
        self.cls_opt = torch.optim.Adam(self.classifier.parameters(), lr=cfg.cls_lr)
        self.gen_opt = torch.optim.Adam(self.perturber.parameters(), lr=cfg.gen_lr)
        self.stream = BatchStream(data.train, cfg.batch_size, seed=cfg.seed)
        self.pretrained = cfg.pretrain_epochs == 0
        self.k = cfg.k
        self.images_seen = 0

    def k_for(self, cycle: int) -> int:
        if self.cfg.schedule == "stepped":
            return stepped_k(cycle, self.cfg.k_steps)
        return self.k  # fixed, or the adaptive schedule's current value

    def _cls_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self.images_seen += len(y)
        return classifier_step(self.classifier, self.cls_opt, self.rt, [("clean", x, y, 1.0)])

    def train_iteration(self, cycle: int) -> dict[str, torch.Tensor]:
        cfg, rt = self.cfg, self.rt
        out: dict[str, torch.Tensor] = {}
        if not self.pretrained:
            for _ in range(cfg.pretrain_epochs):
                pre = run_steps(self.stream.epoch(), self._cls_step)
            out.update({"pretrain/loss": pre["loss"], "pretrain/acc": pre["acc"]})
            self.pretrained = True
        k = self.k_for(cycle)
        gen, tail = Meter(), Meter()
        n_gen = k * cfg.cycle_steps
        for i in range(n_gen):
            x, y = self.stream.next()
            step = perturbation_step(self.perturber, self.classifier, self.gen_opt, rt, x, y)
            gen.update(step)
            if i >= n_gen - cfg.cycle_steps:
                tail.update(step)
            self.images_seen += len(y)
        n_clean = round(cfg.clean_frac * cfg.batch_size)
        cls = Meter()
        for _ in range(cfg.cycle_steps):
            x, y = self.stream.next()
            mixed = x
            if n_clean < len(y):
                with torch.no_grad(), rt.autocast():
                    perturbed = self.perturber(x[n_clean:]).float()
                mixed = torch.cat([x[:n_clean], perturbed])
            step = classifier_step(self.classifier, self.cls_opt, rt, [("mixed", mixed, y, 1.0)])
            cls.update({"cls_loss": step["loss"], "cls_acc": step["acc"]})
            self.images_seen += len(y)
        gen_loss_end = tail.means()["gen_loss"]
        if cfg.schedule == "adaptive":
            # One host sync per cycle: the next k is a step count.
            self.k = adaptive_k(
                k,
                float(gen_loss_end),
                cfg.target_gen_loss,
                factor=cfg.k_factor,
                k_min=cfg.k_min,
                k_max=cfg.k_max,
            )
        k_tensor = torch.tensor(float(k), device=rt.device)
        out.update(
            {
                "ratio/k": k_tensor,
                "ratio/next_k": torch.tensor(float(self.k_for(cycle + 1)), device=rt.device),
                "gen_loss": gen.means()["gen_loss"],
                "gen_loss_end": gen_loss_end,
                **cls.means(),
            }
        )
        return out

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """Validation images perturbed by the generator, with the classifier's predictions."""
        x, y = self.data.val.x[:10], self.data.val.y[:10]
        with torch.no_grad():
            perturbed = self.perturber(x).float()
        return {"perturbations": prediction_grid(x, perturbed, y, predict(self.classifier, perturbed))}


SPEC = TrainableSpec(
    name="adaptive_ratio",
    config_cls=AdaptiveRatioConfig,
    build=AdaptiveRatioProgram,
    headline=(
        "ratio/k",
        "train/gen_loss",
        "train/cls_loss",
        "val/acc",
        "val/fgsm_acc/eps0.3",
        "val/pgd_acc",
    ),
    unit="cycle",
)


def train(config: dict) -> dict:
    """Ray Tune function trainable (also runs on its own, printing a line per cycle)."""
    return run_trial(SPEC, config, default_reporter(SPEC))
