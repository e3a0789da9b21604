"""``wgan_gp``: seed 000's Robust Classifier, trained alongside a conditional WGAN-GP.

Each generator step follows ``n_critic`` critic steps with gradient penalty ``gp_lambda``
(Gulrajani et al., 2017; defaults 5 and 10, Adam betas (0.5, 0.9)). A Classic-architecture
classifier trains on real images with their labels and on generated images with their
conditioning labels, ``cls_rate`` classifier steps per generator step (seed 000: half).

One iteration is ``gen_steps`` generator steps. Besides the shared evaluation of the classifier,
each report carries the Wasserstein estimate, losses, the classifier's and a reference Classic
Classifier's accuracy on fresh samples, the Frechet distance of samples to validation images in
the reference's feature space (no download needed), and seed 000's stage table: the accuracy of
this classifier and of the reference on samples from the generator snapshots taken at the
generator steps listed in ``stages``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trainables.attacks import eval_mode
from trainables.configs import WganGpConfig
from trainables.data import BatchStream, Data
from trainables.evaluation import accuracy, feature_stats, features, frechet_distance
from trainables.media import image_grid
from trainables.models import Critic, Generator, make_classifier
from trainables.reference import ensure_reference, load_reference
from trainables.reporting import console_reporter
from trainables.runtime import Runtime
from trainables.steps import Meter, classifier_step, critic_step, generator_step
from trainables.trial import StatefulProgram, TrainableSpec, run_trial


class WganGpProgram(StatefulProgram):
    state_objects = ("classifier", "generator", "critic", "gen_opt", "critic_opt", "cls_opt", "stream")
    state_values = ("gen_step", "cls_credit", "images_seen")
    classifier_optimizers = ("cls_opt",)

    def __init__(self, cfg: WganGpConfig, rt: Runtime, data: Data):
        self.cfg, self.rt, self.data = cfg, rt, data
        c, k = data.spec.channels, data.spec.num_classes
        self.num_classes = k
        self.generator = rt.module(Generator(c, k, cfg.latent_dim))
        self.critic = rt.module(Critic(c, k if cfg.conditional_critic else None))
        self.classifier = rt.module(make_classifier(cfg.classifier, c, k, cfg.width))
        betas = (cfg.beta1, cfg.beta2)
        self.gen_opt = torch.optim.Adam(self.generator.parameters(), lr=cfg.gen_lr, betas=betas)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, betas=betas)
        self.cls_opt = torch.optim.Adam(self.classifier.parameters(), lr=cfg.cls_lr)
        self.stream = BatchStream(data.train, cfg.batch_size, seed=cfg.seed)
        self.gen_step = 0
        self.cls_credit = 0.0
        self.images_seen = 0
        self.stage_samples: dict[int, torch.Tensor] = {}  # uint8 images, labels are fixed
        source = cfg.ref_classifier or ensure_reference(
            data, rt, epochs=cfg.ref_epochs, train_subset=cfg.train_subset, val_size=len(data.val)
        )
        self.reference = load_reference(source, data, rt)
        real = data.val.subset(cfg.sample_n, seed=0)
        self.real_stats = feature_stats(features(self.reference, real.x))
        # Fixed latents and balanced labels for stage samples (every stage, every trial).
        g = torch.Generator().manual_seed(0)
        self.stage_z = torch.randn(cfg.sample_n, cfg.latent_dim, generator=g).to(rt.device)
        self.stage_y = (torch.arange(cfg.sample_n) % k).to(rt.device)

    def _labels(self, n: int) -> torch.Tensor:
        return torch.randint(0, self.num_classes, (n,), device=self.rt.device)

    def planned_batches(self, iteration: int) -> int:
        """Training batches an iteration draws (critic and classifier), for progress."""
        cfg = self.cfg
        return cfg.gen_steps * cfg.n_critic + int(self.cls_credit + cfg.gen_steps * cfg.cls_rate)

    def train_iteration(self, iteration: int) -> dict[str, torch.Tensor]:
        cfg, rt = self.cfg, self.rt
        meter = Meter()
        for _ in range(cfg.gen_steps):
            for _ in range(cfg.n_critic):
                x, y = self.stream.next()
                meter.update(
                    critic_step(self.critic, self.generator, self.critic_opt, rt, x, y, cfg.gp_lambda)
                )
                self.images_seen += len(y)
            meter.update(
                generator_step(self.generator, self.critic, self.gen_opt, rt, self._labels(cfg.batch_size))
            )
            self.gen_step += 1
            self.cls_credit += cfg.cls_rate
            while self.cls_credit >= 1.0:
                self.cls_credit -= 1.0
                x, y = self.stream.next()
                self.images_seen += len(y)
                z = torch.randn(len(y), cfg.latent_dim, device=rt.device)
                with torch.no_grad(), rt.autocast():
                    fake = self.generator(z, y).float()
                parts = [("cls_real", x, y, 0.5), ("cls_fake", fake, y, 0.5)]
                out = classifier_step(self.classifier, self.cls_opt, rt, parts)
                meter.update({"cls_loss": out["loss"], "cls_acc": out["acc"]})
                meter.update({k: v for k, v in out.items() if k.startswith("cls_")})
            if self.gen_step in cfg.stages:
                self._snapshot()
        return meter.means()

    @torch.no_grad()
    def _generate(self, generator: torch.nn.Module, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with eval_mode(generator):
            return torch.cat(
                [generator(z[i : i + 500], y[i : i + 500]) for i in range(0, len(y), 500)]
            ).float()

    def _snapshot(self) -> None:
        """Keep this stage's samples (fixed latents, uint8) for the stage table."""
        samples = self._generate(self.generator, self.stage_z, self.stage_y)
        self.stage_samples[self.gen_step] = ((samples + 1) * 127.5).round().to(torch.uint8)

    def _stage_images(self, step: int) -> torch.Tensor:
        return self.stage_samples[step].float().div(127.5).sub(1.0)

    def extra_metrics(self, iteration: int, final: bool) -> dict[str, float]:
        cfg, rt = self.cfg, self.rt
        g = torch.Generator(device=rt.device).manual_seed(cfg.seed * 100_003 + iteration)
        z = torch.randn(cfg.sample_n, cfg.latent_dim, device=rt.device, generator=g)
        y = torch.randint(0, self.num_classes, (cfg.sample_n,), device=rt.device, generator=g)
        samples = self._generate(self.generator, z, y)
        tensors = {
            "gen/cls_acc": accuracy(self.classifier, samples, y),
            "gen/ref_acc": accuracy(self.reference, samples, y),
        }
        for step in sorted(self.stage_samples):
            images = self._stage_images(step)
            tensors[f"stage/{step}/cls_acc"] = accuracy(self.classifier, images, self.stage_y)
            tensors[f"stage/{step}/ref_acc"] = accuracy(self.reference, images, self.stage_y)
        values = dict(zip(tensors, torch.stack(list(tensors.values())).tolist()))
        values["gen/fid"] = frechet_distance(
            feature_stats(features(self.reference, samples)), self.real_stats
        )
        values["gen/steps"] = float(self.gen_step)
        return values

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """Samples per class (rows: classes, up to 10), and each stage's samples."""
        rows = min(self.num_classes, 10)
        y = torch.arange(rows, device=self.rt.device).repeat_interleave(8)
        g = torch.Generator(device=self.rt.device).manual_seed(1)
        z = torch.randn(len(y), self.cfg.latent_dim, device=self.rt.device, generator=g)
        grids = {"samples": image_grid(self._generate(self.generator, z, y), nrow=8)}
        for step in sorted(self.stage_samples):
            grids[f"stage_{step}"] = image_grid(self._stage_images(step)[:80], nrow=10)
        return grids

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage_samples": {k: v.cpu() for k, v in self.stage_samples.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.stage_samples = {k: v.to(self.rt.device) for k, v in state["stage_samples"].items()}


SPEC = TrainableSpec(name="wgan_gp", config_cls=WganGpConfig, build=WganGpProgram)


def prepare_search(
    cfg: WganGpConfig, store: Callable[[str, bytes], str], echo: Callable[[str], None]
) -> dict:
    """Before a search: train (or load from the cache) the reference Classic Classifier once,
    on the driver, and give every trial the same copy from the experiment's storage (a given
    ``ref_classifier`` was checked before the search started: ``weights=True``)."""
    if cfg.ref_classifier:
        return {}
    from trainables.trial import load_trial_data

    echo(f"reference classifier for {cfg.dataset}: {cfg.ref_epochs} epoch(s), cached after the first time")
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    data = load_trial_data(cfg, rt)
    path = ensure_reference(
        data, rt, epochs=cfg.ref_epochs, train_subset=cfg.train_subset, val_size=len(data.val)
    )
    uri = store(f"reference/{path.name}", path.read_bytes())
    del data
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"ref_classifier": uri}


def train(config: dict) -> dict:
    """One trial on its own, printing a line per iteration (a search runs ``run_trial`` through Ray Tune)."""
    return run_trial(SPEC, config, console_reporter(SPEC))
