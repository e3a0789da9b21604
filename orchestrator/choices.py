"""Names the CLI validates, kept free of heavy imports so that ``orchestrator --help`` is fast."""

SEARCHERS = ("tpe", "cmaes", "random", "nsga2")
MULTI_OBJECTIVE_SEARCHERS = ("tpe", "random", "nsga2")
SCHEDULERS = ("asha", "fifo")
OBJECTIVES = ("single", "pareto")
WANDB_MODES = ("online", "offline", "disabled")


def asha_rungs(max_t: int, grace_period: int, reduction_factor: float) -> tuple[int, ...]:
    """The iterations at which ASHA (Ray's, and :class:`~orchestrator.schedulers.ParetoASHA`)
    compares trials: ``grace_period * reduction_factor**k`` below ``max_t``."""
    rungs, t = [], float(grace_period)
    while t < max_t:
        rungs.append(round(t))
        t *= reduction_factor
    return tuple(rungs)
