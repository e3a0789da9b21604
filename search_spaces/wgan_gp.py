"""Search space of ``wgan_gp``: the WGAN-GP and the classifier trained alongside it."""

from __future__ import annotations

from typing import Any

from search_spaces.priors import Prior
from search_spaces.spec import Objective, SpaceSpec
from trainables.catalog import TrainableInfo

#: Gulrajani et al.'s WGAN-GP settings (Adam 1e-4, betas 0.5/0.9, 5 critic steps, penalty 10)
#: with seed 000's classifier rate of one step per two generator steps: the trainable's defaults.
PRIORS = (
    Prior(
        "wgan_gp_paper",
        {
            "gen_lr": 1e-4,
            "critic_lr": 1e-4,
            "cls_lr": 1e-3,
            "n_critic": 5,
            "gp_lambda": 10.0,
            "cls_rate": 0.5,
            "beta1": 0.5,
        },
        "Gulrajani et al. 2017 (WGAN-GP), seed 000's classifier rate",
    ),
)


def space(trial) -> dict[str, Any]:
    """Generator, critic and classifier learning rates (log), critic iterations, gradient
    penalty weight, classifier rate, Adam beta1."""
    trial.suggest_float("gen_lr", 1e-5, 1e-3, log=True)
    trial.suggest_float("critic_lr", 1e-5, 1e-3, log=True)
    trial.suggest_float("cls_lr", 1e-4, 1e-2, log=True)
    trial.suggest_int("n_critic", 1, 10)
    trial.suggest_float("gp_lambda", 1.0, 50.0, log=True)
    trial.suggest_float("cls_rate", 0.1, 2.0, log=True)
    trial.suggest_float("beta1", 0.0, 0.9)
    return {}


#: What the orchestrator knows about the trainable (torch-free).
TRAINABLE = TrainableInfo(
    "wgan_gp",
    "trainables.wgan_gp",
    "iteration",
    (
        "train/wasserstein",
        "train/gen_loss",
        "train/cls_loss",
        "val/acc",
        "gen/cls_acc",
        "gen/ref_acc",
        "gen/fid",
    ),
    prepare="trainables.wgan_gp:prepare_search",
    report_sections=("trainables.sections:stage_samples", "trainables.sections:stage_table"),
    config="trainables.configs:WganGpConfig",
    smoke={"gen_steps": 2, "batch_size": 16, "stages": [1, 3], "sample_n": 40, "ref_epochs": 1},
)

SPACE = SpaceSpec(
    "wgan_gp",
    "wgan_gp",
    space,
    Objective("val/acc", "max"),
    max_iterations=20,
    num_samples=12,
    description="Robust Classifier trained alongside a conditional WGAN-GP (seed 000)",
    priors=PRIORS,
)
