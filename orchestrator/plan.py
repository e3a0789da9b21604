"""From settings to a validated plan: everything a user can get wrong is checked here.

``plan_search`` raises :class:`~orchestrator.errors.UserError` (one line, exit code 2) before
any work starts: unknown names, bad ranges, out-of-range or misspelled parameters, storage,
dataset, cluster address. It splits the ``-s`` values into searched parameters fixed for the
search and the base config every trial gets, and validates that config once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.choices import (
    MULTI_OBJECTIVE_SEARCHERS,
    OBJECTIVES,
    SCHEDULERS,
    SEARCHERS,
    WANDB_MODES,
    rung_schedule,
)
from orchestrator.errors import UserError
from orchestrator.plan_checks import (
    check_choice,
    check_environment,
    check_name,
    check_numbers,
    check_objectives_reported,
    check_ranges,
)
from orchestrator.rules import CLEAN_METRIC
from orchestrator.settings import SearchSettings
from orchestrator.storage import Location, check_writable, default_storage, normalize
from orchestrator.study import check_study, default_study_url, open_storage, redact
from orchestrator.tracking import has_api_key, resolve_mode
from orchestrator.warm_start import warm_start
from search_spaces import SPACES, SpaceSpec, get_space
from search_spaces.introspect import ParamInfo, explore
from trainables import get_spec
from trainables.catalog import TrainableInfo, get_info
from trainables.config import ConfigError
from trainables.data import DATASETS, resolve_data_root
from trainables.deadline import DEADLINE_FILE
from trainables.trial import TrainableSpec, TrialConfig


@dataclass(frozen=True)
class Plan:
    settings: SearchSettings
    space: SpaceSpec
    trainable: TrainableSpec
    objectives: list[tuple[str, str]]
    scheduler: str
    max_iterations: int
    num_samples: int
    experiment: Location
    #: The config every trial starts from: the ``-s`` values of parameters the space does not
    #: search, the data folder and the budget.
    trial_config: dict[str, Any]
    #: Searched parameters fixed with ``-s`` (returned by the space as constants).
    fixed: dict[str, Any]
    #: The searched parameters and their distributions (in the results' metadata).
    params: list[dict[str, Any]]
    #: ``trial_config`` and ``fixed`` validated once by the trainable's config class.
    base: TrialConfig
    wandb_mode: str
    wandb_reason: str
    address: str = ""
    #: ``{"metric": "val/acc", "min": x}``: trials below it are infeasible (None: no constraint).
    constraint: dict[str, Any] | None = None
    #: The Optuna storage URL of the study (``orchestrator.study``).
    study_url: str = ""
    #: ``--warm-start``: the earlier experiment's finished trials (Optuna FrozenTrials) and
    #: the configurations to run first.
    warm_trials: list = dataclasses.field(default_factory=list)
    warm_points: list = dataclasses.field(default_factory=list)
    #: The space's priors fitted to this search (``search_spaces.priors``): ``(name, point)``,
    #: run first; and one line per prior that the search's fixed values or ranges changed.
    priors: list = dataclasses.field(default_factory=list)
    prior_notices: list = dataclasses.field(default_factory=list)

    @property
    def sampler_seed(self) -> int:
        """The Optuna sampler's seed: ``--seed``, moved on by the number of warm-start trials, so
        a warm-started search of the same seed does not draw the earlier search's random
        configurations again (TPE samples at random until it has ten finished trials)."""
        return self.settings.seed + len(self.warm_trials)

    @property
    def first_points(self) -> list[dict[str, Any]]:
        """What the searcher runs before it samples: the priors, then warm-start points, no more
        than the search has trials (Optuna would keep the rest WAITING in the study for good)."""
        points = [point for _, point in self.priors]
        return (points + [p for p in self.warm_points if p not in points])[: self.num_samples]

    def study_attrs(self) -> dict[str, Any]:
        """What the Optuna study records about the search (user attributes)."""
        return {
            "space": self.space.name,
            "trainable": self.trainable.name,
            "objectives": [list(o) for o in self.objectives],
            "constraint": self.constraint,
            "experiment": self.experiment.uri,
            "warm_start": self.settings.warm_start or None,
        }

    @property
    def rungs(self) -> tuple[str, int, int, tuple[int, ...]]:
        """ASHA's ``(time attribute, grace period, max_t, rungs)`` (``--rung-unit``)."""
        return _rungs(self.settings, self.max_iterations)

    @property
    def info(self) -> TrainableInfo:
        return get_info(self.trainable.name)

    @property
    def budget_key(self) -> str:
        return self.trainable.config_cls.budget_key

    def results_metadata(self) -> dict[str, Any]:
        """What the results tables carry so that a reader needs nothing else."""
        return {
            "space": self.space.name,
            "trainable": self.trainable.name,
            "budget_key": self.budget_key,
            "unit": self.info.unit,
            "objectives": [list(o) for o in self.objectives],
            "params": self.params,
            "constraint": self.constraint,
        }

    def record(self) -> dict[str, Any]:
        """The settings and what the plan resolved (``orchestrator.json``)."""
        return {
            **dataclasses.asdict(self.settings),
            # Never a password on disk: `resume` asks for --study-storage when the URL had one.
            "study_storage": redact(self.settings.study_storage),
            "trainable": self.trainable.name,
            "objectives": self.objectives,
            "scheduler_resolved": self.scheduler,
            "max_iterations_resolved": self.max_iterations,
            "num_samples_resolved": self.num_samples,
            "trial_config": self.trial_config,
            "fixed": self.fixed,
            "params": self.params,
            "wandb_mode_resolved": self.wandb_mode,
            "study_storage_resolved": redact(self.study_url),
            "budget_key": self.budget_key,
            "unit": self.info.unit,
            "constraint": self.constraint,
        }


#: The iteration cap of a trial under ``--time-budget`` without ``--max-iterations``.
TIME_BUDGET_MAX_ITERATIONS = 1000


def describe_params(
    params: Mapping[str, ParamInfo], ranges: Mapping[str, tuple], fixed: Mapping[str, Any]
) -> list:
    """The searched parameters as plain dicts (name, kind, range or choices, log, branch)."""
    out = []
    for name, info in params.items():
        if name in fixed:
            continue
        d = info.distribution
        if hasattr(d, "choices"):
            out.append({"name": name, "kind": "categorical", "choices": list(d.choices)})
        else:
            low, high = ranges.get(name, (d.low, d.high))
            kind = "int" if isinstance(d.low, int) else "float"
            out.append({"name": name, "kind": kind, "low": low, "high": high, "log": bool(d.log)})
        out[-1]["conditions"] = list(info.conditions)
    return out


def default_name(space: str) -> str:
    return f"{space}-{time.strftime('%Y%m%d-%H%M%S')}"


def plan_search(settings: SearchSettings, *, check_dataset: bool = True, check_storage: bool = True) -> Plan:
    """Validate ``settings`` (one-line :class:`UserError` for anything wrong) into a plan: the
    settings alone first, then the trial config (validated once, by the trainable's config
    class), then what the settings point at (storage, dataset, cluster, study, warm start)."""
    space, trainable, objectives, scheduler = _choices(settings)
    check_numbers(settings)
    max_iterations = settings.max_iterations or _default_budget(settings, space, trainable)
    params = {p.name: p for p in explore(space.space)}
    ranges = check_ranges(params, trainable, settings.ranges, space.name)
    fixed = {k: v for k, v in settings.config.items() if k in params}
    if set(ranges) & set(fixed):
        raise UserError(f"{', '.join(sorted(set(ranges) & set(fixed)))}: both fixed and given a range")
    wandb_mode, reason = resolve_mode(settings.wandb_mode or None)
    if wandb_mode == "online" and not has_api_key():
        raise UserError(
            "W&B online mode needs an API key: `wandb login` or WANDB_API_KEY, or --wandb-mode offline"
        )
    storage = normalize(settings.storage or default_storage())
    name = check_name(settings.name or default_name(settings.space))
    experiment = Location.parse(storage).child(name)
    trial_config = _trial_config(settings, trainable, params, scheduler, max_iterations, experiment)
    base = validated(trainable, trial_config, fixed)
    check_objectives_reported(objectives, base)
    if check_storage:
        check_writable(storage)
    address = check_environment(settings, base, check_dataset)
    min_clean = DATASETS[base.dataset].min_clean if settings.min_clean is None else settings.min_clean
    study_url = settings.study_storage or default_study_url(experiment, name)
    if settings.study_storage:
        check_study(
            open_storage(study_url, create=True, what="--study-storage"), name, space.name, objectives
        )
    warm, points = warm_start(settings, space, params, fixed, ranges, objectives, storage)
    priors, notices = _priors(settings, space, fixed, ranges)
    return Plan(
        settings=dataclasses.replace(
            settings, name=name, storage=storage, ranges=ranges, max_concurrent=_max_concurrent(settings)
        ),
        space=space,
        trainable=trainable,
        objectives=objectives,
        scheduler=scheduler,
        max_iterations=max_iterations,
        num_samples=settings.num_samples or space.num_samples,
        experiment=experiment,
        trial_config=trial_config,
        fixed=fixed,
        params=describe_params(params, ranges, fixed),
        base=base,
        wandb_mode=wandb_mode,
        wandb_reason=reason,
        address=address,
        constraint={"metric": CLEAN_METRIC, "min": float(min_clean)} if min_clean > 0 else None,
        study_url=study_url,
        warm_trials=warm,
        warm_points=points,
        priors=priors,
        prior_notices=notices,
    )


def validated(trainable: TrainableSpec, trial_config: Mapping[str, Any], fixed: Mapping[str, Any]):
    """The one validation of a search's trial config: the trainable's config class reads the
    base config and the fixed searched values (one-line :class:`UserError` if it refuses)."""
    try:
        return trainable.config_cls.from_dict({**trial_config, **fixed})
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _choices(settings: SearchSettings):
    """The space, its trainable, the objectives ``(metric, mode)`` and the scheduler."""
    check_choice(settings.space, SPACES, "space")
    check_choice(settings.searcher, SEARCHERS, "searcher")
    check_choice(settings.objective, OBJECTIVES, "objective")
    space = get_space(settings.space)
    objectives = [(o.metric, o.mode) for o in space.objectives(settings.objective)]
    scheduler = settings.scheduler or ("asha" if settings.objective == "single" else "fifo")
    check_choice(scheduler, SCHEDULERS, "scheduler")
    if len(objectives) > 1 and settings.searcher not in MULTI_OBJECTIVE_SEARCHERS:
        raise UserError(
            f"searcher {settings.searcher} is single-objective; for --objective pareto use one of "
            f"{', '.join(MULTI_OBJECTIVE_SEARCHERS)}"
        )
    if settings.wandb_mode:
        check_choice(settings.wandb_mode, WANDB_MODES, "W&B mode")
    return space, get_spec(space.trainable), objectives, scheduler


def _default_budget(settings: SearchSettings, space: SpaceSpec, trainable: TrainableSpec) -> int:
    """Iterations per trial without ``--max-iterations``: the space's; with a time budget, trials
    train until the deadline and the iteration budget is only a cap."""
    if not settings.time_budget_s:
        return space.max_iterations
    cls = trainable.config_cls
    field = {f.name: f for f in dataclasses.fields(cls)}[cls.budget_key]
    return int(min(TIME_BUDGET_MAX_ITERATIONS, field.metadata.get("hi") or math.inf))


def _trial_config(settings, trainable, params, scheduler: str, max_iterations: int, experiment) -> dict:
    """The config every trial starts from: the ``-s`` values of parameters the space does not
    search, the data folder, the budget, ASHA's rungs and the deadline file."""
    budget_key = trainable.config_cls.budget_key
    if budget_key in settings.config:
        raise UserError(f"-s {budget_key}: set the budget with --max-iterations")
    trial_config = {k: v for k, v in settings.config.items() if k not in params}
    if settings.data_dir:
        trial_config["data_dir"] = str(resolve_data_root(settings.data_dir))
    trial_config[budget_key] = max_iterations
    if scheduler == "asha" and not {"robust_rungs", "robust_rungs_s"} & set(settings.config):
        # Robust validation metrics are fresh wherever ASHA compares trials (carried between).
        key = "robust_rungs_s" if settings.rung_unit == "seconds" else "robust_rungs"
        trial_config[key] = _rungs(settings, max_iterations)[3]
    if settings.time_budget_s:  # trials end themselves before the search's deadline
        trial_config["deadline_file"] = experiment.child(DEADLINE_FILE).uri
    return trial_config


def _rungs(s: SearchSettings, max_iterations: int) -> tuple[str, int, int, tuple[int, ...]]:
    return rung_schedule(s.rung_unit, s.grace_period, s.reduction_factor, max_iterations, s.time_budget_s)


def _max_concurrent(settings: SearchSettings) -> int:
    """``--max-concurrent``, or under ``--time-budget`` on a private local Ray as many trials as
    its resources run at once: Ray Tune otherwise creates trials ahead, which wait PENDING and
    start after the exploration share of the budget is over (and run past the deadline)."""
    import os

    if settings.max_concurrent or not settings.time_budget_s or settings.address:
        return settings.max_concurrent
    slots = (settings.num_cpus or os.cpu_count() or 1) / settings.cpus_per_trial
    if settings.gpus_per_trial > 0:
        import torch

        slots = min(slots, torch.cuda.device_count() / settings.gpus_per_trial)
    return max(1, int(slots))


def _priors(settings, space, fixed, ranges) -> tuple[list, list[str]]:
    """The space's priors fitted to this search's fixed values and ranges (none with
    ``--no-priors``), and what fitting changed."""
    from search_spaces.priors import fit_priors

    if settings.no_priors:
        return [], []
    return fit_priors(space.space, space.priors, fixed, ranges)
