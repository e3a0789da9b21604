"""Search space of ``adaptive_ratio``: the perturbation GAN, its generator family and its
training-ratio schedule."""

from __future__ import annotations

from typing import Any

from search_spaces.priors import Prior
from search_spaces.spec import Objective, SpaceSpec
from trainables.catalog import TrainableInfo

#: Stepped schedules to choose from, as ``first_cycle:k`` steps (the first is seed 001's 6-8-12).
STEPPED = ("1:6,8:8,15:12", "1:2,6:4,12:8", "1:4,6:8,12:16", "1:2,8:6,15:12")

#: The learned-attacker recipe of docs/RESULTS.md, method (b): 79.8% under the worst of APGD-CE,
#: APGD-T and Square (eps 0.3) after 15 CPU minutes.
PRIORS = (
    Prior(
        "learned_attacker",
        {
            "cls_lr": 1e-3,
            "gen_lr": 1e-3,
            "gen_eps": 0.3,
            "clean_frac": 0.2,
            "generator": "gradient",
            "gen_steps": 5,
            "gen_step_size": 0.5,
            "adv_copies": 1,
            "schedule": "fixed",
            "k": 1,
        },
        "Jang, Wu & Jha 2019 after docs/RESULTS.md (b): 5 steps of 0.5 eps, one code, k 1, clean share 0.2",
    ),
)


def space(trial) -> dict[str, Any]:
    """Learning rates (log), perturbation eps ([0, 1] scale) and the clean share of classifier
    batches; the generator family with its own parameters (conditional): the learned
    attacker's recursive steps, step size (a fraction of eps), adversarial copies per image and,
    with two copies, the weight of the diversity term; the ratio schedule with its own
    parameters (conditional)."""
    trial.suggest_float("cls_lr", 1e-4, 1e-2, log=True)
    trial.suggest_float("gen_lr", 1e-4, 1e-2, log=True)
    trial.suggest_float("gen_eps", 0.1, 0.4)
    trial.suggest_float("clean_frac", 0.0, 0.8)
    constants: dict[str, Any] = {}
    generator = trial.suggest_categorical("generator", ["image", "gradient"])
    if generator == "gradient":
        trial.suggest_int("gen_steps", 1, 10)
        trial.suggest_float("gen_step_size", 0.1, 1.0)
        copies = trial.suggest_categorical("adv_copies", [1, 2])
        if copies == 2:
            trial.suggest_float("diversity_weight", 0.0, 4.0)
    schedule = trial.suggest_categorical("schedule", ["fixed", "stepped", "adaptive"])
    if schedule == "fixed":
        trial.suggest_int("k", 1, 8)
    elif schedule == "stepped":
        trial.suggest_categorical("k_steps", list(STEPPED))
    else:
        trial.suggest_float("target_gen_loss", 0.3, 0.9)
        k_min = trial.suggest_int("k_min", 1, 4)
        trial.suggest_int("k_max", 16, 1024, log=True)
        constants["k"] = k_min  # the adaptive schedule starts at its lower bound
    return constants


#: What the orchestrator knows about the trainable (torch-free).
TRAINABLE = TrainableInfo(
    "adaptive_ratio",
    "trainables.adaptive_ratio",
    "cycle",
    (
        "ratio/k",
        "train/gen_loss",
        "train/cls_loss",
        "attack/gen_acc",
        "attack/pgd10_acc",
        "val/acc",
        "val/apgd_acc",
    ),
    report_sections=("trainables.sections:ratio_cycles",),
    config="trainables.configs:AdaptiveRatioConfig",
    smoke={"cycle_steps": 2, "pretrain_epochs": 1},
)

SPACE = SpaceSpec(
    "adaptive_ratio",
    "adaptive_ratio",
    space,
    Objective("val/apgd_acc", "max"),
    max_iterations=20,
    num_samples=16,
    description="Perturbation GAN with fixed / stepped / adaptive training ratio (seed 001)",
    priors=PRIORS,
)
