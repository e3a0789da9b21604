"""Search space of ``classic``: the Classic Classifier and its adversarial-training baseline."""

from __future__ import annotations

from typing import Any

from search_spaces.priors import Prior
from search_spaces.spec import Objective, SpaceSpec
from trainables.catalog import TrainableInfo

#: Madry et al.'s recipe (ICLR 2018): PGD adversarial training at eps 0.3 on adversarial
#: examples only (Adam 1e-3 here: the project's budgets are far shorter than their 100,000 steps).
PRIORS = (
    Prior(
        "madry_pgd",
        {
            "lr": 1e-3,
            "batch_size": 128,
            "weight_decay": 1e-7,
            "adv_train": "pgd",
            "adv_eps": 0.3,
            "adv_weight": 1.0,
        },
        "Madry et al. 2018, PGD training at eps 0.3; docs/RESULTS.md (c)",
    ),
)


def space(trial) -> dict[str, Any]:
    """Learning rate, batch size, weight decay; adversarial training, its eps ([0, 1] scale) and
    the weight of its adversarial loss (0.5: Goodfellow et al.'s mix, 1.0: Madry et al.'s)."""
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("batch_size", [64, 128, 256])
    trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True)
    adv = trial.suggest_categorical("adv_train", ["none", "fgsm", "pgd"])
    if adv != "none":
        trial.suggest_float("adv_eps", 0.1, 0.4)
        trial.suggest_float("adv_weight", 0.5, 1.0)
    return {}


#: What the orchestrator knows about the trainable (torch-free).
TRAINABLE = TrainableInfo(
    "classic",
    "trainables.classic",
    "epoch",
    ("train/loss", "train/acc", "val/acc", "val/fgsm_acc/eps0.3", "val/apgd_acc"),
    config="trainables.configs:ClassicConfig",
    smoke={"adv_steps": 2},
)

SPACE = SpaceSpec(
    "classic",
    "classic",
    space,
    Objective("val/apgd_acc", "max"),
    max_iterations=10,
    num_samples=20,
    description="Classic Classifier with optional FGSM/PGD adversarial training (seed 000/001)",
    priors=PRIORS,
)
