"""``adaptive_ratio``: seed 001's perturbation GAN with a generator:classifier training ratio.

The classifier (Classic architecture) is first pre-trained on clean images for
``pretrain_epochs``. Then every cycle (one iteration) trains the generator and the classifier
in the ratio k of the schedule, with one of two generator families (``generator``):

- ``image`` (seed 001's generator, the default): a network of the image alone. The classifier
  is frozen (eval mode) while the generator takes ``k * cycle_steps`` steps minimising the
  classifier's mean probability of the true class on perturbed images (the generator loss);
  then the classifier takes ``cycle_steps`` steps on batches that mix clean images (fraction
  ``clean_frac``) with perturbed ones, all with their true labels.
- ``gradient``: the learned attacker of Jang, Wu & Jha (ICCV 2019), a recursive generator that
  sees the classifier's input gradient (:class:`~trainables.models.GradientAttacker`). Each of
  the cycle's ``cycle_steps`` classifier steps is preceded by k attacker updates on fresh
  batches (one attack of ``adv_copies`` latent codes per image each); the classifier then trains
  on the last batch's clean images (loss weight ``clean_frac``) and its adversarial copies
  (weight ``1 - clean_frac``) in one forward pass, BatchNorm in train mode, as in adversarial
  training. The attack itself runs with the classifier frozen in eval mode.

For both families the generator loss the schedules look at (``train/gen_loss``) is the
classifier's mean probability of the true class on the generator's images: low means the
generator fools the classifier. k follows the ratio schedule: ``fixed``, ``stepped`` or
``adaptive`` (raised while the generator loss of the cycle's last steps is above
``target_gen_loss``, lowered once it is under). Perturbations are bounded by ``gen_eps`` on the
[0, 1] pixel scale. The seed's generator allowed 0.5, which lets it move every pixel to
mid-grey and erase the digit; the default is the evaluation radius 0.3.

Each cycle also reports how strong the generator is as an attack: the classifier's accuracy on
the generator's images (``attack/gen_acc``) and on PGD-10 images (``attack/pgd10_acc``) of the
same training batch.
"""

from __future__ import annotations

import torch

from trainables.attacks import adversarial_examples, learned_attack
from trainables.configs import AdaptiveRatioConfig
from trainables.data import BatchStream, Data
from trainables.evaluation import accuracy, predict
from trainables.media import prediction_grid
from trainables.models import GradientAttacker, PerturbationGenerator, make_classifier
from trainables.reporting import console_reporter
from trainables.runtime import Runtime
from trainables.schedules import adaptive_k, stepped_k
from trainables.steps import Meter, attacker_step, classifier_step, perturbation_step, run_steps
from trainables.trial import StatefulProgram, TrainableSpec, run_trial


class AdaptiveRatioProgram(StatefulProgram):
    state_objects = ("classifier", "perturber", "cls_opt", "gen_opt", "stream", "attack_rng")
    state_values = ("pretrained", "k", "images_seen")
    classifier_optimizers = ("cls_opt",)

    def __init__(self, cfg: AdaptiveRatioConfig, rt: Runtime, data: Data):
        self.cfg, self.rt, self.data = cfg, rt, data
        self.classifier = rt.module(
            make_classifier(cfg.classifier, data.spec.channels, data.spec.num_classes, cfg.width)
        )
        if cfg.generator == "gradient":
            self.perturber = rt.module(
                GradientAttacker(
                    data.spec.channels, eps=cfg.gen_eps, steps=cfg.gen_steps, step_size=cfg.gen_step_size
                )
            )
        else:
            self.perturber = rt.module(PerturbationGenerator(data.spec.channels, eps=cfg.gen_eps))
        self.cls_opt = torch.optim.Adam(self.classifier.parameters(), lr=cfg.cls_lr)
        self.gen_opt = torch.optim.Adam(self.perturber.parameters(), lr=cfg.gen_lr)
        self.stream = BatchStream(data.train, cfg.batch_size, seed=cfg.seed)
        # The per-cycle strength check draws from its own RNG: it must not shift training.
        self.attack_rng = torch.Generator(device=rt.device).manual_seed(cfg.seed + 1)
        self.pretrained = cfg.pretrain_epochs == 0
        self.k = cfg.k
        self.images_seen = 0

    def k_for(self, cycle: int) -> int:
        if self.cfg.schedule == "stepped":
            return stepped_k(cycle, self.cfg.k_steps)
        return self.k  # fixed, or the adaptive schedule's current value

    def planned_batches(self, cycle: int) -> int:
        """Training batches cycle ``cycle`` draws (pre-training included), for progress."""
        cfg = self.cfg
        n = 0 if self.pretrained else cfg.pretrain_epochs * self.stream.batches_per_epoch
        n += self.k_for(cycle) * cfg.cycle_steps
        return n + (cfg.cycle_steps if cfg.generator == "image" else 0)

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
        self.perturber.eps = cfg.gen_eps * self.attack_scale  # eps_ramp
        cycle_out, (x, y) = self._gradient_cycle(k) if cfg.generator == "gradient" else self._image_cycle(k)
        out.update(cycle_out)
        if cfg.schedule == "adaptive":
            # One host sync per cycle: the next k is a step count.
            self.k = adaptive_k(
                k,
                float(out["gen_loss_end"]),
                cfg.target_gen_loss,
                factor=cfg.k_factor,
                k_min=cfg.k_min,
                k_max=cfg.k_max,
            )
        out.update(
            {
                "ratio/k": torch.tensor(float(k), device=rt.device),
                "ratio/next_k": torch.tensor(float(self.k_for(cycle + 1)), device=rt.device),
                **self._strength(x, y),
            }
        )
        return out

    def _image_cycle(self, k: int):
        """Seed 001: k * cycle_steps generator steps, then cycle_steps classifier steps."""
        cfg, rt = self.cfg, self.rt
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
        out = {"gen_loss": gen.means()["gen_loss"], "gen_loss_end": tail.means()["gen_loss"], **cls.means()}
        return out, (x, y)

    def _gradient_cycle(self, k: int):
        """Jang et al.: cycle_steps classifier steps, each after k learned-attacker updates."""
        cfg, rt = self.cfg, self.rt
        gen, tail = Meter(), Meter()
        cls = Meter()
        n_gen, i = k * cfg.cycle_steps, 0
        for _ in range(cfg.cycle_steps):
            for _ in range(k):
                x, y = self.stream.next()
                step, adv = attacker_step(
                    self.perturber,
                    self.classifier,
                    self.gen_opt,
                    rt,
                    x,
                    y,
                    copies=cfg.adv_copies,
                    diversity_weight=cfg.diversity_weight,
                    random_start=cfg.gen_random_start,
                )
                gen.update(step)
                if i >= n_gen - cfg.cycle_steps:
                    tail.update(step)
                i += 1
                self.images_seen += len(y)
            parts = [
                ("clean", x, y, cfg.clean_frac),
                ("adv", adv, y.repeat(cfg.adv_copies), 1 - cfg.clean_frac),
            ]
            out = classifier_step(self.classifier, self.cls_opt, rt, parts)
            # cls_acc: on the clean images (on the adversarial ones when clean_frac is 0).
            cls.update({f"cls_{name}": value for name, value in out.items()})
        means = gen.means()
        out = {
            "gen_loss": means["gen_loss"],
            "gen_loss_end": tail.means()["gen_loss"],
            "gen_ce": means["gen_ce"],
            "gen_diversity": means["gen_diversity"],
            **cls.means(),
        }
        return out, (x, y)

    def _generated(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial images of ``x`` (no training)."""
        if self.cfg.generator == "gradient":
            return learned_attack(self.perturber, self.classifier, x, y, generator=self.attack_rng)
        with torch.no_grad():
            return self.perturber(x).float()

    def _strength(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The classifier's accuracy on the generator's images and on PGD-10 images of one
        training batch: how strong the generator is as an attack (device tensors, no sync)."""
        generated = self._generated(x, y)
        pgd10 = adversarial_examples(
            self.classifier, x, y, "pgd", self.cfg.gen_eps, steps=10, generator=self.attack_rng
        )
        return {
            "attack/gen_acc": accuracy(self.classifier, generated, y),
            "attack/pgd10_acc": accuracy(self.classifier, pgd10, y),
        }

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """Validation images perturbed by the generator, with the classifier's predictions."""
        x, y = self.data.val.x[:10], self.data.val.y[:10]
        if self.cfg.generator == "gradient":
            # Its own RNG: drawing images must not shift the training random stream.
            rng = torch.Generator(device=self.rt.device).manual_seed(0)
            perturbed = learned_attack(self.perturber, self.classifier, x, y, generator=rng)
        else:
            with torch.no_grad():
                perturbed = self.perturber(x).float()
        return {"perturbations": prediction_grid(x, perturbed, y, predict(self.classifier, perturbed))}


SPEC = TrainableSpec(name="adaptive_ratio", config_cls=AdaptiveRatioConfig, build=AdaptiveRatioProgram)


def train(config: dict) -> dict:
    """One trial on its own, printing a line per cycle (a search runs ``run_trial`` through Ray Tune)."""
    return run_trial(SPEC, config, console_reporter(SPEC))
