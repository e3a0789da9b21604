"""Search space of ``classic``: the Classic Classifier and its adversarial-training baseline."""

from __future__ import annotations

from typing import Any


def space(trial) -> dict[str, Any]:
    """Learning rate, batch size, weight decay; adversarial training and its eps ([0, 1] scale)."""
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("batch_size", [64, 128, 256])
    trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True)
    adv = trial.suggest_categorical("adv_train", ["none", "fgsm", "pgd"])
    if adv != "none":
        trial.suggest_float("adv_eps", 0.1, 0.4)
    return {}
