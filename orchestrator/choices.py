"""Names the CLI validates, kept free of heavy imports so that ``orchestrator --help`` is fast."""

import math

from trainables.metrics import TRIAL_SECONDS

SEARCHERS = ("tpe", "cmaes", "random", "nsga2")
MULTI_OBJECTIVE_SEARCHERS = ("tpe", "random", "nsga2")
SCHEDULERS = ("asha", "fifo")
OBJECTIVES = ("single", "pareto")
WANDB_MODES = ("online", "offline", "disabled")
#: What ASHA's rungs count: a trial's iterations, or its own seconds (training and validation;
#: ``--time-budget`` searches, where an iteration's cost differs many-fold between trials).
RUNG_UNITS = ("iterations", "seconds")
#: The trainable's own iteration counter, not Tune's ``training_iteration``: after a damaged
#: checkpoint is skipped on a restore, a trial repeats iterations Tune has already counted.
ITERATION = "iteration"
#: ``--rung-unit seconds`` without ``--grace-period``: the first rung at this share of the budget.
DEFAULT_GRACE_SHARE = 1 / 60


def asha_rungs(max_t: float, grace_period: float, reduction_factor: float) -> tuple[int, ...]:
    """The iterations (or seconds) at which ASHA (Ray's, and
    :class:`~orchestrator.schedulers.ParetoASHA`) compares trials: ``grace_period *
    reduction_factor**k`` below ``max_t``."""
    rungs, t = [], float(grace_period)
    while t < max_t:
        rungs.append(round(t))
        t *= reduction_factor
    return tuple(rungs)


def rung_schedule(
    unit: str, grace_period: int, reduction_factor: float, max_iterations: int, time_budget_s: float
) -> tuple[str, int, int, tuple[int, ...]]:
    """``(time attribute, grace period, max_t, rungs)`` of a search's ASHA. ``grace_period`` 0
    is the unit's default: one iteration, or 1/60 of the time budget in seconds."""
    if unit == "seconds":
        grace = grace_period or max(1, round(time_budget_s * DEFAULT_GRACE_SHARE))
        max_t = max(1, math.ceil(time_budget_s))
        return TRIAL_SECONDS, min(grace, max_t), max_t, asha_rungs(max_t, min(grace, max_t), reduction_factor)
    grace = min(grace_period or 1, max_iterations)
    return ITERATION, grace, max_iterations, asha_rungs(max_iterations, grace, reduction_factor)
