"""Running a planned search.

``run_search`` runs the trainable's prepare hook (``trainables.catalog``), saves the settings,
starts or joins Ray, fits the ``Tuner`` and returns the leaderboard; ``orchestrator.resume``
restores an interrupted experiment from its storage and finishes it with the same pieces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from orchestrator import driver_lock, interrupt, ray_runtime
from orchestrator.compat import tune as tune_compat
from orchestrator.errors import SearchFailed, SearchInterrupted, UserError
from orchestrator.leaderboard import leaderboard
from orchestrator.plan import Plan, validated
from orchestrator.results import (
    HISTORY_FILE,
    PARTS_DIR,
    TRIALS_FILE,
    ResultsStore,
    load_results,
    table_metadata,
)
from orchestrator.settings import save_record
from orchestrator.storage import SETTINGS_FILE, Location, StorageWriteError, is_uri
from orchestrator.tuner import build_tuner
from trainables.catalog import resolve
from trainables.deadline import DEADLINE_FILE, EXPLORE_SHARE, TimeBudget

E = TypeVar("E", bound=BaseException)


@dataclass
class Outcome:
    experiment_uri: str
    trials_path: str
    history_path: str
    wandb_runs: list[str]
    #: Every trial, best first.
    leaderboard: list[dict[str, Any]]
    objectives: list[tuple[str, str]]
    errors: int
    #: ``{"metric", "min"}`` of ``--min-clean``, or None.
    constraint: dict[str, Any] | None = None
    #: The searched parameters' names and the trainable's unit (for the returned-model line).
    searched: list[str] = dataclasses.field(default_factory=list)
    unit: str = "iteration"


def wandb_runs(experiment: Location) -> list[str]:
    if is_uri(experiment.uri):
        return []
    return sorted(str(p) for p in Path(experiment.path).glob("*/wandb/*run-*") if p.is_dir())


def collect(experiment_uri: str, objectives) -> Outcome:
    loc = Location.parse(experiment_uri)
    trials, _ = load_results(loc)
    rows = trials.to_pylist()
    meta = table_metadata(trials)
    return Outcome(
        constraint=meta.get("constraint"),
        searched=[p["name"] for p in meta.get("params") or []],
        unit=meta.get("unit") or "iteration",
        experiment_uri=loc.uri,
        trials_path=loc.child(TRIALS_FILE).uri,
        history_path=loc.child(HISTORY_FILE).uri,
        wandb_runs=wandb_runs(loc),
        leaderboard=leaderboard(rows, objectives),
        objectives=[tuple(o) for o in objectives],
        errors=sum(r["status"] == "ERROR" for r in rows),
    )


def prepare(plan: Plan, echo: Callable[[str], None]) -> Plan:
    """Run the trainable's prepare hook once on the driver: the plan with its values joined to
    every trial's config, validated again (the plan itself is never changed)."""
    if not plan.info.prepare:
        return plan

    def store(name: str, data: bytes) -> str:
        target = plan.experiment.child(*name.split("/"))
        target.write_bytes(data)
        return target.uri

    updates = resolve(plan.info.prepare)(plan.base, store, echo)
    trial_config = {**plan.trial_config, **updates}
    return dataclasses.replace(
        plan, trial_config=trial_config, base=validated(plan.trainable, trial_config, plan.fixed)
    )


@contextlib.contextmanager
def budget_clock(experiment: Location, budget_s: float, echo: Callable[[str], None]):
    """``--time-budget``: the deadline this driver's trials end by (a resume gets what is left),
    and this driver's seconds added to the spent budget however it ends."""
    if not budget_s:
        yield
        return
    store = ResultsStore(experiment)
    history = store.read()[1] if store.has_results() else []
    budget = TimeBudget(experiment.child(DEADLINE_FILE).uri)
    deadline = budget.start(budget_s, history)
    left = max(deadline - time.time(), 0.0)
    explore = max(left - (1 - EXPLORE_SHARE) * budget_s, 0.0)
    echo(
        f"time budget: {left / 60:.1f} min left; new trials start in the next {explore / 60:.1f} min, "
        "then the running ones train until the deadline"
    )
    try:
        yield
    finally:
        budget.stop()


def behind(exc: BaseException | None, cls: type[E]) -> E | None:
    """The ``cls`` exception behind ``exc`` (Ray Tune may wrap it), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, cls):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def fit(tuner, name: str, experiment: Location) -> None:
    """``tuner.fit()``; a write failure or an interruption becomes one line and its exit code,
    with what was finished kept."""
    tune_compat.quiet_disk_full()
    tune_compat.tolerate_deleted_checkpoints()
    try:
        tuner.fit()
    except KeyboardInterrupt:
        error = SearchInterrupted(
            f"interrupted (forced): trials were killed; `orchestrator resume {name}` continues "
            "them from their last checkpoints"
        )
        error.exit_code = 128 + (interrupt.requested() or signal.SIGINT)
        raise error from None
    except Exception as exc:
        failure = behind(exc, StorageWriteError)
        if failure is None:
            raise
        experiment.remove_leftovers()
        experiment.child(PARTS_DIR).remove_leftovers()
        raise SearchFailed(
            f"{failure}; the search stopped. What was written before stays readable; once the "
            f"cause is fixed, `orchestrator resume {name}` continues it"
        ) from None
    signum = interrupt.requested()
    if signum:
        rows = load_results(experiment)[0].to_pylist()
        stopped = sum(r["outcome"] == "interrupted" for r in rows)
        what = signal.Signals(signum).name
        if stopped:
            text = (
                f"interrupted by {what}: {stopped} unfinished trial(s) recorded as interrupted; "
                f"continue with `orchestrator resume {name}`"
            )
        else:  # the signal came after the last trial had ended: nothing is left to resume
            text = f"interrupted by {what} after every trial had ended; the results are complete"
        error = SearchInterrupted(text)
        error.exit_code = 128 + signum
        raise error


def run_search(plan: Plan, echo: Callable[[str], None] = print, *, fresh: bool = False) -> Outcome:
    """Run a planned search to the end and return its results. ``fresh``: the experiment
    exists and the user asked to start it over (``resume --fresh``): its finished trials stay,
    its unfinished ones are recorded as interrupted (FAIL in the study), new trials run."""
    s = plan.settings
    command = f"orchestrator {'resume' if fresh else 'search'} {s.name}{' --fresh' if fresh else ''}"
    existed = plan.experiment.exists()
    try:
        with driver_lock.hold(plan.experiment, command, echo):
            return _run_search(plan, echo, fresh=fresh)
    except UserError:
        if not existed:  # refused before anything was written: leave no empty folder behind
            plan.experiment.remove_if_empty()
        raise


def _run_search(plan: Plan, echo: Callable[[str], None], *, fresh: bool) -> Outcome:
    s = plan.settings
    if fresh:
        marked = ResultsStore(plan.experiment).mark_unfinished_interrupted()
        reconcile_study(plan.study_url, s.name, plan.experiment, plan.objectives, echo, interrupted="FAIL")
        echo(f"starting {s.name} over: {marked} unfinished trial(s) now interrupted, finished ones kept")
    elif plan.experiment.child(SETTINGS_FILE).exists():
        raise UserError(
            f"experiment {s.name!r} already exists in {s.storage}; "
            f"`orchestrator resume {s.name}` continues it, or pick another --name"
        )
    echo(
        f"experiment {s.name}: space {plan.space.name}, {plan.num_samples} trials x "
        f"{plan.max_iterations} {plan.info.unit}s, {s.searcher} + {plan.scheduler}, objective "
        + " & ".join(f"{m} ({mode})" for m, mode in plan.objectives)
    )
    if plan.scheduler == "asha":
        _, _, _, rungs = plan.rungs
        unit = "s of a trial's time" if s.rung_unit == "seconds" else f" {plan.info.unit}s"
        echo(f"ASHA's rungs at {', '.join(map(str, rungs))}{unit} (eta {s.reduction_factor})")
    for notice in plan.prior_notices:
        echo(notice)
    if plan.priors:
        names = ", ".join(name for name, _ in plan.priors)
        echo(f"priors run first: {names} (`orchestrator spaces` shows them; --no-priors searches blind)")
    if s.warm_start:
        first = len([p for p in plan.first_points if p in plan.warm_points])
        echo(
            f"warm start from {s.warm_start}: the study starts with its {len(plan.warm_trials)} finished "
            f"trial(s); {first} of its best configuration(s) run first"
        )
    echo(f"W&B: {plan.wandb_mode} ({plan.wandb_reason}), project {s.wandb_project}, group {s.name}")
    plan = prepare(plan, echo)
    save_record(plan.experiment, plan.record())
    with interrupt.stop_requests(echo), budget_clock(plan.experiment, s.time_budget_s, echo):
        started = ray_runtime.start(
            plan.address or None, ray_runtime.worker_env(plan.wandb_mode), num_cpus=s.num_cpus or None
        )
        try:
            fit(build_tuner(plan), s.name, plan.experiment)
        finally:
            ray_runtime.stop(started)
    reconcile_study(plan.study_url, s.name, plan.experiment, plan.objectives, echo)
    return collect(plan.experiment.uri, plan.objectives)


def reconcile_study(
    url: str,
    name: str,
    experiment: Location,
    objectives,
    echo: Callable[[str], None],
    interrupted: str | None = None,
) -> None:
    """After a search: the study agrees with trials.parquet (``orchestrator.study.reconcile``;
    ``interrupted``: the state to tell the trials of interrupted rows, which by default stay
    RUNNING for a resume)."""
    if not url:
        return
    from orchestrator.study import open_storage, reconcile

    try:
        trials, _ = load_results(experiment)
    except FileNotFoundError:
        return
    fixed = reconcile(open_storage(url), name, trials.to_pylist(), objectives, interrupted=interrupted)
    if fixed["orphaned"]:
        echo(f"study: {fixed['orphaned']} trial(s) asked for by an interrupted driver marked FAIL (orphaned)")
