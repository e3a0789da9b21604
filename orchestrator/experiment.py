"""Building and running a search: settings -> validated plan -> Ray Tune ``Tuner``.

``plan_search`` checks everything a user can get wrong (names, ranges, fixed values, storage,
dataset, cluster address) and raises :class:`~orchestrator.errors.UserError` before any trial
starts. ``build_tuner`` turns a plan into a ``Tuner`` without starting Ray (so it can be
inspected in tests). ``run_search`` and ``resume_search`` start or join Ray, fit, and leave the
Parquet tables and W&B runs behind.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import ray_runtime
from orchestrator.choices import (
    MULTI_OBJECTIVE_SEARCHERS,
    OBJECTIVES,
    SCHEDULERS,
    SEARCHERS,
    WANDB_MODES,
)
from orchestrator.errors import UserError
from orchestrator.results import (
    HISTORY_FILE,
    TRIALS_FILE,
    ParquetCallback,
    leaderboard,
    load_results,
)
from orchestrator.schedulers import make_scheduler
from orchestrator.searchers import make_searcher
from orchestrator.storage import SETTINGS_FILE, Location, check_writable, default_storage, normalize
from orchestrator.tracking import WandbCallback, has_api_key, resolve_mode
from search_spaces import SPACES, SpaceSpec, get_space
from search_spaces.introspect import ConstrainedSpace, explore
from trainables import get_spec, get_trainable
from trainables.config import ConfigError
from trainables.data import DatasetUnavailable, prepare_dataset, resolve_data_root
from trainables.trial import TrainableSpec


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``orchestrator search`` takes; saved with the experiment for ``resume``."""

    space: str
    name: str = ""
    storage: str = ""
    num_samples: int = 0  # 0: the space's default
    max_concurrent: int = 0  # 0: as many as the cluster's resources allow
    searcher: str = "tpe"
    objective: str = "single"
    scheduler: str = ""  # "": ASHA for one objective, FIFO for a Pareto search
    max_iterations: int = 0  # 0: the space's default budget
    time_budget_s: float = 0.0
    grace_period: int = 1
    reduction_factor: int = 3
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str = ""  # "": a private local Ray instance
    num_cpus: int = 0  # local Ray only; 0: all cores
    seed: int = 0
    fixed: Mapping[str, Any] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    trial_config: Mapping[str, Any] = field(default_factory=dict)
    data_dir: str = ""
    wandb_project: str = "robust-orchestrator"
    wandb_mode: str = ""  # "": online with a key and a reachable server, else offline
    max_failures: int = 2
    keep_checkpoints: int = 2


@dataclass
class Plan:
    settings: SearchSettings
    space: SpaceSpec
    trainable: TrainableSpec
    objectives: list[tuple[str, str]]
    scheduler: str
    max_iterations: int
    num_samples: int
    experiment: Location
    constants: dict[str, Any]
    wandb_mode: str
    wandb_reason: str
    address: str = ""


def _check_choice(value: str, choices, what: str) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")


def _check_ranges(space: SpaceSpec, trainable: TrainableSpec, ranges: Mapping[str, Any]) -> dict:
    params = {p.name: p.distribution for p in explore(space.space)}
    fields = {f.name: f for f in dataclasses.fields(trainable.config_cls)}
    checked = {}
    for name, bounds in ranges.items():
        if name not in params:
            raise UserError(f"--range {name}: not a parameter of space {space.name} ({', '.join(params)})")
        dist = params[name]
        if not hasattr(dist, "low"):
            raise UserError(f"--range {name}: categorical; fix it with --fix instead")
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise UserError(f"--range {name}: expected LOW:HIGH numbers, got {bounds!r}") from None
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise UserError(f"--range {name}={low:g}:{high:g}: LOW must be below HIGH")
        if dist.log and low <= 0:
            raise UserError(f"--range {name}={low:g}:{high:g}: a log-scale range must be positive")
        meta = fields[name].metadata
        if (meta.get("lo") is not None and low < meta["lo"]) or (
            meta.get("hi") is not None and high > meta["hi"]
        ):
            raise UserError(
                f"--range {name}={low:g}:{high:g} leaves the valid range [{meta.get('lo')}, {meta.get('hi')}]"
            )
        if isinstance(dist.low, int) and not (low.is_integer() and high.is_integer()):
            raise UserError(f"--range {name}={low:g}:{high:g}: an integer parameter needs integer bounds")
        checked[name] = (int(low), int(high)) if isinstance(dist.low, int) else (low, high)
    return checked


def default_name(space: str) -> str:
    return f"{space}-{time.strftime('%Y%m%d-%H%M%S')}"


def plan_search(settings: SearchSettings, *, check_dataset: bool = True, check_storage: bool = True) -> Plan:
    """Validate ``settings`` (one-line :class:`UserError` for anything wrong) into a plan."""
    _check_choice(settings.space, SPACES, "space")
    _check_choice(settings.searcher, SEARCHERS, "searcher")
    _check_choice(settings.objective, OBJECTIVES, "objective")
    space = get_space(settings.space)
    trainable = get_spec(space.trainable)
    objectives = [(o.metric, o.mode) for o in space.objectives(settings.objective)]
    scheduler = settings.scheduler or ("asha" if settings.objective == "single" else "fifo")
    _check_choice(scheduler, SCHEDULERS, "scheduler")
    if len(objectives) > 1 and settings.searcher not in MULTI_OBJECTIVE_SEARCHERS:
        raise UserError(
            f"searcher {settings.searcher} is single-objective; for --objective pareto use one of "
            f"{', '.join(MULTI_OBJECTIVE_SEARCHERS)}"
        )
    if settings.wandb_mode and settings.wandb_mode not in WANDB_MODES:
        raise UserError(f"unknown W&B mode {settings.wandb_mode!r}; choose from {', '.join(WANDB_MODES)}")
    if settings.num_samples < 0 or settings.max_iterations < 0 or settings.max_concurrent < 0:
        raise UserError("--num-samples, --max-iterations and --max-concurrent must not be negative")
    if settings.cpus_per_trial <= 0:
        raise UserError("--cpus-per-trial must be positive")
    gpus = settings.gpus_per_trial
    if gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
        raise UserError("--gpus-per-trial must be a fraction of one GPU (0.25) or a whole number")
    max_iterations = settings.max_iterations or space.max_iterations
    if settings.grace_period < 1 or settings.reduction_factor < 2:
        raise UserError("--grace-period must be >= 1 and --reduction-factor >= 2")
    ranges = _check_ranges(space, trainable, settings.ranges)
    budget_key = trainable.config_cls.budget_key
    constants = dict(settings.trial_config)
    if settings.data_dir:
        constants["data_dir"] = str(resolve_data_root(settings.data_dir))
    constants[budget_key] = max_iterations
    for name in settings.fixed:
        if name == budget_key:
            raise UserError(f"--fix {name}: set the budget with --max-iterations")
    try:
        trainable.config_cls.from_dict({**constants, **settings.fixed})
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    overlap = set(ranges) & set(settings.fixed)
    if overlap:
        raise UserError(f"{', '.join(sorted(overlap))}: both fixed and given a range")
    wandb_mode, reason = resolve_mode(settings.wandb_mode or None)
    if wandb_mode == "online" and not has_api_key():
        raise UserError(
            "W&B online mode needs an API key: `wandb login` or WANDB_API_KEY, or --wandb-mode offline"
        )
    storage = normalize(settings.storage or default_storage())
    name = settings.name or default_name(settings.space)
    if "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: a plain folder name, please")
    experiment = check_writable(storage).child(name) if check_storage else Location.parse(storage).child(name)
    if check_dataset:
        cfg = trainable.config_cls.from_dict(constants)
        try:
            prepare_dataset(cfg.dataset, cfg.data_dir or None)
        except DatasetUnavailable as exc:
            raise UserError(str(exc)) from None
    address = ray_runtime.check_address(settings.address) if settings.address else ""
    settings = dataclasses.replace(settings, name=name, storage=storage, ranges=ranges)
    return Plan(
        settings=settings,
        space=space,
        trainable=trainable,
        objectives=objectives,
        scheduler=scheduler,
        max_iterations=max_iterations,
        num_samples=settings.num_samples or space.num_samples,
        experiment=experiment,
        constants=constants,
        wandb_mode=wandb_mode,
        wandb_reason=reason,
        address=address,
    )


def _trial_dirname(trial) -> str:
    return f"{trial.trainable_name}_{trial.trial_id}"


def _loggers():
    """Tune's JSON and CSV loggers without the PNG payloads of ``media/*`` keys."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    class JsonLogger(JsonLoggerCallback):
        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(
                iteration, trial, {k: v for k, v in result.items() if not k.startswith("media/")}
            )

    class CsvLogger(CSVLoggerCallback):
        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(
                iteration, trial, {k: v for k, v in result.items() if not k.startswith("media/")}
            )

    return [JsonLogger(), CsvLogger()]


def callbacks(plan: Plan) -> list:
    s = plan.settings
    out = [
        ParquetCallback(
            plan.experiment.uri,
            space=plan.space.name,
            trainable=plan.trainable.name,
            budget_key=plan.trainable.config_cls.budget_key,
            objectives=plan.objectives,
        ),
        *_loggers(),
    ]
    if plan.wandb_mode != "disabled":
        out.append(
            WandbCallback(
                project=s.wandb_project,
                group=s.name,
                job_type=plan.space.name,
                mode=plan.wandb_mode,
                objectives=plan.objectives,
                tags=[plan.space.name, s.searcher, s.objective],
            )
        )
    return out


def trainable_with_resources(plan_or_settings) -> Callable:
    from ray import tune

    s = plan_or_settings.settings if isinstance(plan_or_settings, Plan) else plan_or_settings
    name = get_space(s.space).trainable
    trainable = get_trainable(name)
    # What Tune prints of a finished trial (it would print every one of ~40 metrics).
    headline = get_spec(name).headline
    trainable._progress_metrics = ["iteration", "val/acc", "val/pgd_acc", *headline, "diverged"]
    return tune.with_resources(trainable, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})


def build_tuner(plan: Plan):
    """The ``Tuner`` of a plan (Ray is not started)."""
    from ray import tune

    s = plan.settings
    metrics = [m for m, _ in plan.objectives]
    modes = [m for _, m in plan.objectives]
    space = ConstrainedSpace(plan.space.space, s.fixed, s.ranges)
    searcher = make_searcher(
        space,
        metrics,
        modes,
        searcher=s.searcher,
        seed=s.seed,
        budget_key=plan.trainable.config_cls.budget_key,
        budget=plan.max_iterations,
    )
    scheduler = make_scheduler(
        plan.scheduler,
        metrics,
        modes,
        max_t=plan.max_iterations,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=plan.num_samples,
        max_concurrent_trials=s.max_concurrent or None,
        time_budget_s=s.time_budget_s or None,
        trial_dirname_creator=_trial_dirname,
        reuse_actors=False,
    )
    run_config = tune.RunConfig(
        name=s.name,
        storage_path=s.storage,
        stop={"training_iteration": plan.max_iterations},
        callbacks=callbacks(plan),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=s.keep_checkpoints),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
        verbose=1,
    )
    return tune.Tuner(
        trainable_with_resources(plan),
        param_space=dict(plan.constants),
        tune_config=tune_config,
        run_config=run_config,
    )


def save_settings(plan: Plan) -> None:
    record = dataclasses.asdict(plan.settings)
    record.update(
        {
            "trainable": plan.trainable.name,
            "objectives": plan.objectives,
            "scheduler_resolved": plan.scheduler,
            "max_iterations_resolved": plan.max_iterations,
            "num_samples_resolved": plan.num_samples,
            "constants": plan.constants,
            "wandb_mode_resolved": plan.wandb_mode,
            "budget_key": plan.trainable.config_cls.budget_key,
        }
    )
    plan.experiment.child(SETTINGS_FILE).write_json(record)


def load_settings(name: str, storage: str | None = None) -> dict[str, Any]:
    """The saved settings of experiment ``name`` (one-line error if there is none)."""
    loc = Location.parse(storage or default_storage()).child(name)
    path = loc.child(SETTINGS_FILE)
    if not path.exists():
        raise UserError(f"no experiment {name!r} under {loc.uri.rsplit('/', 1)[0]} (no {SETTINGS_FILE})")
    record = path.read_json()
    record["experiment_uri"] = loc.uri
    return record


def prepare_reference(plan: Plan, echo: Callable[[str], None]) -> None:
    """wgan_gp: train (or load) the reference Classic Classifier once, on the driver, and give
    every trial the same copy from the experiment's storage."""
    if (
        plan.trainable.name != "wgan_gp"
        or plan.constants.get("ref_classifier")
        or "ref_classifier" in plan.settings.fixed
    ):
        return
    import torch

    from trainables.reference import ensure_reference
    from trainables.runtime import Runtime
    from trainables.trial import load_trial_data

    cfg = plan.trainable.config_cls.from_dict(plan.constants)
    echo(f"reference classifier for {cfg.dataset}: {cfg.ref_epochs} epoch(s), cached after the first time")
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    data = load_trial_data(cfg, rt)
    path = ensure_reference(
        data, rt, epochs=cfg.ref_epochs, train_subset=cfg.train_subset, val_size=len(data.val)
    )
    target = plan.experiment.child("reference", Path(path).name)
    target.write_bytes(Path(path).read_bytes())
    plan.constants["ref_classifier"] = target.uri
    del data
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Outcome:
    experiment_uri: str
    trials_path: str
    history_path: str
    wandb_runs: list[str]
    leaderboard: list[dict[str, Any]]
    objectives: list[tuple[str, str]]
    errors: int


def wandb_runs(experiment: Location) -> list[str]:
    if experiment.uri.startswith(("s3://", "gs://", "hdfs://")) or "://" in experiment.uri:
        return []
    return sorted(str(p) for p in Path(experiment.path).glob("*/wandb/*run-*") if p.is_dir())


def collect(experiment_uri: str, objectives, top: int = 10) -> Outcome:
    loc = Location.parse(experiment_uri)
    trials, _ = load_results(loc)
    rows = trials.to_pylist()
    return Outcome(
        experiment_uri=loc.uri,
        trials_path=loc.child(TRIALS_FILE).uri,
        history_path=loc.child(HISTORY_FILE).uri,
        wandb_runs=wandb_runs(loc),
        leaderboard=leaderboard(rows, objectives, top),
        objectives=[tuple(o) for o in objectives],
        errors=sum(r["status"] == "ERROR" for r in rows),
    )


def _fit(tuner, plan_like: dict, echo) -> None:
    try:
        tuner.fit()
    except KeyboardInterrupt:
        echo(f"interrupted: continue with `orchestrator resume {plan_like['name']}`")
        raise


def run_search(plan: Plan, echo: Callable[[str], None] = print) -> Outcome:
    """Run a planned search to the end and return its results."""
    s = plan.settings
    existing = plan.experiment.child(SETTINGS_FILE)
    if existing.exists():
        raise UserError(
            f"experiment {s.name!r} already exists in {s.storage}; "
            f"`orchestrator resume {s.name}` continues it, or pick another --name"
        )
    echo(
        f"experiment {s.name}: space {plan.space.name}, {plan.num_samples} trials x "
        f"{plan.max_iterations} {plan.trainable.unit}s, {s.searcher} + {plan.scheduler}, objective "
        + " & ".join(f"{m} ({mode})" for m, mode in plan.objectives)
    )
    echo(f"W&B: {plan.wandb_mode} ({plan.wandb_reason}), project {s.wandb_project}, group {s.name}")
    prepare_reference(plan, echo)
    save_settings(plan)
    started = ray_runtime.start(
        plan.address or None, ray_runtime.worker_env(plan.wandb_mode), num_cpus=s.num_cpus or None
    )
    try:
        _fit(build_tuner(plan), {"name": s.name}, echo)
    finally:
        ray_runtime.stop(started)
    return collect(plan.experiment.uri, plan.objectives)


def resume_search(
    name: str,
    storage: str | None = None,
    address: str | None = None,
    echo: Callable[[str], None] = print,
) -> Outcome:
    """Continue an interrupted search: unfinished and errored trials resume from their last
    checkpoints; the Optuna study and the scheduler's state come back with the experiment."""
    from ray import tune

    record = load_settings(name, storage)
    uri = record["experiment_uri"]
    if not tune.Tuner.can_restore(uri):
        raise UserError(f"experiment {name!r} at {uri} has no Ray Tune state to resume from")
    known = {f.name for f in dataclasses.fields(SearchSettings)}
    settings = SearchSettings(**{k: v for k, v in record.items() if k in known})
    mode = record.get("wandb_mode_resolved", "offline")
    resolved = ray_runtime.check_address(address) if address else ""
    echo(f"resuming experiment {name} from {uri}")
    started = ray_runtime.start(
        resolved or None, ray_runtime.worker_env(mode), num_cpus=settings.num_cpus or None
    )
    try:
        tuner = tune.Tuner.restore(
            uri,
            trainable=trainable_with_resources(settings),
            resume_unfinished=True,
            resume_errored=True,
            param_space=record.get("constants"),
        )
        _fit(tuner, {"name": name}, echo)
    finally:
        ray_runtime.stop(started)
    return collect(uri, [tuple(o) for o in record["objectives"]])
