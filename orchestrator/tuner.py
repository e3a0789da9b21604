"""A plan's Ray Tune ``Tuner``: searcher, scheduler, callbacks, resources. Ray is not started
here, so the Tuner can be built and inspected in tests."""

from __future__ import annotations

import os
from collections.abc import Callable

from orchestrator import study_sync
from orchestrator.callbacks import CsvLogger, JsonLogger, ParquetCallback, ResultLines
from orchestrator.core_share import CoreShare
from orchestrator.plan import Plan
from orchestrator.schedulers import ITERATION, make_scheduler
from orchestrator.searchers import make_searcher
from orchestrator.settings import SearchSettings
from orchestrator.study import open_storage
from orchestrator.tracking import WandbCallback
from orchestrator.tune_trainable import tune_trainable
from search_spaces.introspect import ConstrainedSpace
from trainables.catalog import TrainableInfo
from trainables.deadline import TimeBudget


def _trial_dirname(trial) -> str:
    return f"{trial.trainable_name}_{trial.trial_id}"


def callbacks(plan: Plan) -> list:
    s = plan.settings
    out = [
        ParquetCallback(
            plan.experiment.uri,
            metadata=plan.results_metadata(),
            budget_key=plan.budget_key,
            objectives=plan.objectives,
            study_copy=s.name if study_sync.needs_copy(plan.study_url, plan.experiment, s.name) else None,
        ),
        ResultLines(
            unit=plan.info.unit,
            budget=plan.max_iterations,
            keys=[m for m, _ in plan.objectives] + ["val/acc"],
        ),
        JsonLogger(),
        CsvLogger(),
    ]
    if s.time_budget_s and not plan.address:  # a private local Ray: its cores are the search's
        cpus = s.num_cpus or os.cpu_count() or 1
        out.append(CoreShare(plan.experiment.uri, s.time_budget_s, cpus, s.cpus_per_trial))
    if plan.wandb_mode != "disabled":
        out.append(
            WandbCallback(
                project=s.wandb_project,
                group=s.name,
                job_type=plan.space.name,
                mode=plan.wandb_mode,
                objectives=plan.objectives,
                tags=[plan.space.name, s.searcher, s.objective],
                base_config=plan.base.to_dict(),
            )
        )
    return out


def trainable_with_resources(info: TrainableInfo, settings: SearchSettings) -> Callable:
    """The trainable's Tune function with the CPUs and GPUs each trial asks for."""
    from ray import tune

    return tune.with_resources(
        tune_trainable(info), {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    )


def search_algorithms(plan: Plan):
    """The plan's searcher (its study in the plan's storage) and trial scheduler."""
    s = plan.settings
    metrics = [m for m, _ in plan.objectives]
    modes = [m for _, m in plan.objectives]
    searcher = make_searcher(
        ConstrainedSpace(plan.space.space, plan.fixed, s.ranges),
        metrics,
        modes,
        searcher=s.searcher,
        seed=plan.sampler_seed,
        budget_key=plan.budget_key,
        budget=plan.max_iterations,
        constraint=plan.constraint,
        storage=open_storage(plan.study_url, create=True),
        study_name=s.name,
        study_attrs=plan.study_attrs(),
        warm_trials=plan.warm_trials,
        points_to_evaluate=plan.first_points,
        deadline_file=plan.trial_config.get("deadline_file", ""),
        time_budget_s=s.time_budget_s,
    )
    time_attr, grace, max_t, _ = plan.rungs
    scheduler = make_scheduler(
        plan.scheduler,
        metrics,
        modes,
        max_t=max_t,
        grace_period=grace,
        reduction_factor=s.reduction_factor,
        experiment_uri=plan.experiment.uri,
        time_attr=time_attr,
    )
    return searcher, scheduler


#: A finished trial's worker process runs the next trial (all trials ask for the same resources):
#: a new worker would import torch and Ray Tune again, ~5 s of CPU per trial
#: (benchmarks/trial_overhead.py measures it). A trial sets its own seed, threads and GPU cap and
#: takes its checkpoint from its own folder (``TuneReporter.load_checkpoint``), so nothing but
#: imported modules carries over from one trial to the next.
REUSE_WORKERS = True


def build_tuner(plan: Plan):
    """The ``Tuner`` of a plan (Ray is not started)."""
    from ray import tune

    s = plan.settings
    searcher, scheduler = search_algorithms(plan)
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=plan.num_samples,
        max_concurrent_trials=s.max_concurrent or None,
        # The trials end themselves before the deadline (trainables.deadline); this is a backstop.
        time_budget_s=TimeBudget.backstop(s.time_budget_s) or None,
        trial_dirname_creator=_trial_dirname,
        reuse_actors=REUSE_WORKERS,
    )
    run_config = tune.RunConfig(
        name=s.name,
        storage_path=s.storage,
        stop={ITERATION: plan.max_iterations},
        callbacks=callbacks(plan),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=s.keep_checkpoints),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
        verbose=1,
    )
    return tune.Tuner(
        trainable_with_resources(plan.info, s),
        param_space=dict(plan.trial_config),
        tune_config=tune_config,
        run_config=run_config,
    )
