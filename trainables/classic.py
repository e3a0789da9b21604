"""``classic``: seed 000's Classic Classifier, optionally adversarially trained.

One iteration is one epoch over the training split. With ``adv_train`` = ``fgsm`` or ``pgd``
each batch is trained on clean and adversarial images, weighted ``1 - adv_weight`` and
``adv_weight`` (Goodfellow et al.'s mix at 0.5; Madry et al.'s PGD training at 1.0): the
adversarial-retraining baseline seed 001 compares against.
"""

from __future__ import annotations

import torch

from trainables.attacks import adversarial_examples, pgd
from trainables.configs import ClassicConfig
from trainables.data import BatchStream, Data
from trainables.evaluation import predict
from trainables.media import prediction_grid
from trainables.models import make_classifier
from trainables.reporting import console_reporter
from trainables.runtime import Runtime
from trainables.steps import classifier_step, run_steps
from trainables.trial import StatefulProgram, TrainableSpec, run_trial


class ClassicProgram(StatefulProgram):
    state_objects = ("classifier", "optimizer", "stream", "attack_rng")
    state_values = ("images_seen",)
    classifier_optimizers = ("optimizer",)

    def __init__(self, cfg: ClassicConfig, rt: Runtime, data: Data):
        self.cfg, self.rt, self.data = cfg, rt, data
        self.classifier = rt.module(
            make_classifier(cfg.classifier, data.spec.channels, data.spec.num_classes, cfg.width)
        )
        self.optimizer = torch.optim.Adam(
            self.classifier.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.stream = BatchStream(data.train, cfg.batch_size, seed=cfg.seed)
        self.attack_rng = torch.Generator(device=rt.device).manual_seed(cfg.seed + 1)
        self.images_seen = 0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        self.images_seen += len(y)
        if cfg.adv_train == "none":
            return classifier_step(self.classifier, self.optimizer, self.rt, [("clean", x, y, 1.0)])
        with self.rt.autocast():
            x_adv = adversarial_examples(
                self.classifier,
                x,
                y,
                cfg.adv_train,
                cfg.adv_eps * self.attack_scale,
                steps=cfg.adv_steps,
                step_size=cfg.adv_step_size or None,
                generator=self.attack_rng,
            ).float()
        parts = [("clean", x, y, 1.0 - cfg.adv_weight), ("adv", x_adv, y, cfg.adv_weight)]
        return classifier_step(self.classifier, self.optimizer, self.rt, parts)

    def train_iteration(self, iteration: int) -> dict[str, torch.Tensor]:
        return run_steps(self.stream.epoch(), self.step)

    def planned_batches(self, iteration: int) -> int:
        return self.stream.batches_per_epoch

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """PGD examples (the evaluation attack) with the model's predictions."""
        x, y = self.data.val.x[:10], self.data.val.y[:10]
        cfg = self.cfg
        x_adv = pgd(
            self.classifier,
            x,
            y,
            cfg.pgd_eps,
            steps=cfg.pgd_steps or 1,
            step_size=cfg.pgd_step_size,
            # Its own RNG: drawing images must not shift the training random stream.
            generator=torch.Generator(device=self.rt.device).manual_seed(0),
        )
        return {"pgd_examples": prediction_grid(x, x_adv, y, predict(self.classifier, x_adv))}


SPEC = TrainableSpec(name="classic", config_cls=ClassicConfig, build=ClassicProgram)


def train(config: dict) -> dict:
    """One trial on its own, printing a line per epoch (a search runs ``run_trial`` through Ray Tune)."""
    return run_trial(SPEC, config, console_reporter(SPEC))
