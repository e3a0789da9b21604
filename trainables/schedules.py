"""Schedules as pure functions: seed 001's generator:classifier training ratios (of the cycle),
and the classifier's learning rate and the training attack's strength over a trial's budget.

- ``fixed``: k generator units per classifier unit in every cycle (seed: 2:1, then 4:1).
- ``stepped``: k from a list of ``(first_cycle, k)`` steps (seed: 6 -> 8 -> 12).
- ``adaptive``: after each cycle, k is raised by ``factor`` while the generator loss stays above
  ``target`` and lowered by it once the loss is under the target, within ``[k_min, k_max]``
  (seed: target 0.6; k climbed past 700).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SCHEDULES = ("fixed", "stepped", "adaptive")
#: The classifier's learning rate over the trial's budget ("Budgeted training", Li, Yumer and
#: Ramanan, ICLR 2020: a schedule that decays to zero exactly at the budget beats a fixed one).
LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, progress: float, floor: float = 0.0) -> float:
    """The learning rate's multiple of its initial value with ``progress`` (0 to 1) of the budget
    spent: 1 throughout (constant), or a linear or cosine decay from 1 to ``floor`` at the end."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return floor + (1.0 - floor) * (1.0 - p)
    if schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose from {', '.join(LR_SCHEDULES)}")


def ramp_factor(progress: float, ramp: float) -> float:
    """The training attack's share of its eps with ``progress`` of the budget spent: a linear
    ramp from 0 over the first ``ramp`` of the budget, then 1 (``ramp`` 0: full from the start).
    Never below 1% (a learned attacker divides its perturbation by eps)."""
    if ramp <= 0:
        return 1.0
    return min(max(progress / ramp, 0.01), 1.0)


def stepped_k(cycle: int, steps: Sequence[tuple[int, int]]) -> int:
    """k of the last step starting at or before ``cycle`` (cycles count from 1)."""
    if not steps:
        raise ValueError("a stepped schedule needs at least one (cycle, k) step")
    ordered = sorted(steps)
    k = ordered[0][1]
    for start, value in ordered:
        if start <= cycle:
            k = value
    return k


def adaptive_k(k: int, gen_loss: float, target: float, *, factor: float, k_min: int, k_max: int) -> int:
    """Next k: more generator training while its loss is above ``target``, less once under."""
    if factor <= 1:
        raise ValueError(f"factor={factor} must be > 1")
    if gen_loss > target:
        nxt = max(k + 1, math.ceil(k * factor))
    else:
        nxt = min(k - 1, math.floor(k / factor))
    return int(min(k_max, max(k_min, nxt)))


def validate_steps(steps: Sequence[tuple[int, int]]) -> None:
    if not steps:
        raise ValueError("k_steps must list at least one 'cycle:k' step")
    starts = [s for s, _ in steps]
    if len(set(starts)) != len(starts):
        raise ValueError("k_steps has two steps starting at the same cycle")
    if min(starts) != 1:
        raise ValueError("k_steps must start at cycle 1")
    if any(k < 1 for _, k in steps):
        raise ValueError("every k of k_steps must be >= 1")
