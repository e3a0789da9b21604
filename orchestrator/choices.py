"""Names the CLI validates, kept free of heavy imports so that ``orchestrator --help`` is fast."""

SEARCHERS = ("tpe", "cmaes", "random", "nsga2")
MULTI_OBJECTIVE_SEARCHERS = ("tpe", "random", "nsga2")
SCHEDULERS = ("asha", "fifo")
OBJECTIVES = ("single", "pareto")
WANDB_MODES = ("online", "offline", "disabled")
