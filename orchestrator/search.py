"""Running a planned search, and resuming an interrupted one.

``run_search`` runs the trainable's prepare hook (``trainables.catalog``), saves the settings,
starts or joins Ray, fits the ``Tuner`` and returns the leaderboard; ``resume_search`` restores
an experiment from its storage and finishes it.
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

from orchestrator import driver_lock, interrupt, ray_runtime, relocation, time_budget
from orchestrator.compat import tune as tune_compat
from orchestrator.errors import SearchFailed, SearchInterrupted, UserError
from orchestrator.leaderboard import leaderboard
from orchestrator.plan import Plan, validated
from orchestrator.plan_checks import check_cluster_resources
from orchestrator.results import (
    HISTORY_FILE,
    PARTS_DIR,
    TRIALS_FILE,
    ResultsStore,
    load_results,
    table_metadata,
)
from orchestrator.settings import SearchSettings, former_locations, load_settings, save_record
from orchestrator.storage import SETTINGS_FILE, Location, StorageWriteError, is_uri
from orchestrator.tuner import build_tuner, trainable_with_resources
from trainables.catalog import get_info, resolve

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
def _clock(experiment: Location, budget_s: float, echo: Callable[[str], None]):
    """``--time-budget``: the deadline this driver's trials end by (a resume gets what is left),
    and this driver's seconds added to the spent budget however it ends."""
    if not budget_s:
        yield
        return
    store = ResultsStore(experiment)
    history = store.read()[1] if store.has_results() else []
    deadline = time_budget.start(experiment, budget_s, history)
    left = max(deadline - time.time(), 0.0)
    explore = max(left - (1 - time_budget.EXPLORE_SHARE) * budget_s, 0.0)
    echo(
        f"time budget: {left / 60:.1f} min left; new trials start in the next {explore / 60:.1f} min, "
        "then the running ones train until the deadline"
    )
    try:
        yield
    finally:
        time_budget.stop(experiment)


def _behind(exc: BaseException | None, cls: type[E]) -> E | None:
    """The ``cls`` exception behind ``exc`` (Ray Tune may wrap it), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, cls):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _fit(tuner, name: str, experiment: Location) -> None:
    """``tuner.fit()``; a write failure or an interruption becomes one line and its exit code,
    with what was finished kept."""
    tune_compat.quiet_disk_full()
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
        failure = _behind(exc, StorageWriteError)
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
    with driver_lock.hold(plan.experiment, command, echo):
        return _run_search(plan, echo, fresh=fresh)


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
    with interrupt.stop_requests(echo), _clock(plan.experiment, s.time_budget_s, echo):
        started = ray_runtime.start(
            plan.address or None, ray_runtime.worker_env(plan.wandb_mode), num_cpus=s.num_cpus or None
        )
        try:
            _fit(build_tuner(plan), s.name, plan.experiment)
        finally:
            ray_runtime.stop(started)
    reconcile_study(plan.study_url, s.name, plan.experiment, plan.objectives, echo)
    return collect(plan.experiment.uri, plan.objectives)


def study_url_of(record: dict[str, Any], override: str | None = None) -> str:
    """The study storage URL of a saved search: ``override`` (the user's ``--study-storage``,
    needed when the saved URL had a password, which is never written down), else the URL its
    search was given, else the default beside the experiment where it is now (it may have been
    moved); "" for an experiment from before studies were kept in a database."""
    from orchestrator.study import default_study_url, saved_url_usable

    url = override or record.get("study_storage") or ""
    if not url:
        if not record.get("study_storage_resolved"):
            return ""
        url = default_study_url(Location.parse(record["experiment_uri"]), record["name"])
    return saved_url_usable(url)


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


def restart_search(
    name: str,
    storage: str | None = None,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    study_storage: str | None = None,
) -> Outcome:
    """Start an experiment over with its saved settings (``orchestrator resume NAME --fresh``),
    in the same folder and study: for when its Ray Tune state cannot be restored."""
    record = load_settings(name, storage)
    experiment = Location.parse(record["experiment_uri"])
    with driver_lock.hold(experiment, f"orchestrator resume {name} --fresh", echo):
        return _restart_search(record, experiment, address, echo, study_storage)


def _restart_search(record, experiment: Location, address, echo, study_storage) -> Outcome:
    from orchestrator.plan import plan_search

    store = ResultsStore(experiment)
    if store.has_results():
        store.read()  # a damaged table is one line before anything runs
    # The study URL the user gave (none: the default beside the experiment, wherever it is now).
    url = study_storage or record.get("study_storage") or ""
    if url:
        from orchestrator.study import saved_url_usable

        url = saved_url_usable(url)
    settings = dataclasses.replace(
        SearchSettings.from_record(record),
        # Where it is now, under the folder's name now, if it was moved or copied.
        name=experiment.uri.rsplit("/", 1)[1],
        storage=experiment.uri.rsplit("/", 1)[0],
        study_storage=url,
        address=address or "",
    )
    return run_search(plan_search(settings), echo, fresh=True)


def resume_search(
    name: str,
    storage: str | None = None,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    study_storage: str | None = None,
) -> Outcome:
    """Continue an interrupted search: unfinished and errored trials resume from their last
    checkpoints; the Optuna study comes back with the experiment, and the ASHA schedulers rebuild
    their rung records from its history (``orchestrator.schedulers``)."""
    from ray import tune

    record = load_settings(name, storage)
    uri = record["experiment_uri"]
    if not tune.Tuner.can_restore(uri):
        raise UserError(f"experiment {name!r} at {uri} has no Ray Tune state to resume from")
    experiment = Location.parse(uri)
    with driver_lock.hold(experiment, f"orchestrator resume {name}", echo):
        return _resume_search(name, record, experiment, address, echo, study_storage)


def _resume_search(name, record, experiment: Location, address, echo, study_storage) -> Outcome:
    uri = experiment.uri
    store = ResultsStore(experiment)
    if store.has_results():
        store.read()  # a damaged table is one line (CorruptResults) before Ray starts
    settings = SearchSettings.from_record(record)
    study_url = study_url_of(record, study_storage)
    if study_url:
        from orchestrator.study import check_readable

        check_readable(study_url, record["name"], name)
    resolved = ray_runtime.check_address(address) if address else ""
    if resolved and not resolved.startswith("ray://"):
        check_cluster_resources(settings, ray_runtime.cluster_nodes(resolved))
    olds = former_locations(record)
    with relocation.experiment_moved(olds, uri):
        _note_move(record, olds, experiment, study_url, echo)
        echo(f"resuming experiment {name} from {uri}")
        _restore_and_fit(name, record, experiment, settings, resolved, echo)
    objectives = [tuple(o) for o in record["objectives"]]
    reconcile_study(study_url, record["name"], experiment, objectives, echo)
    return collect(uri, objectives)


def _note_move(record, olds: list[str], experiment: Location, study_url: str, echo) -> None:
    """For an experiment moved or copied since its last driver: declare where its study is now,
    say so, and record the new place (the objects Ray Tune pickled keep the old paths)."""
    from orchestrator.study import redact

    saved_study = record.get("study_storage_resolved") or ""
    if study_url and saved_study and redact(study_url) != saved_study:
        relocation.moved([saved_study], redact(study_url))
    if not olds:
        return
    echo(f"experiment {record['name']} was at {olds[-1]}; it continues at {experiment.uri}")
    save_record(
        experiment,
        {
            **record,
            "storage": experiment.uri.rsplit("/", 1)[0],
            "former_locations": olds,
            "study_storage_resolved": redact(study_url) if study_url else "",
        },
    )


def _restore_and_fit(name, record, experiment: Location, settings, resolved: str, echo) -> None:
    """Restore the experiment's Ray Tune state (after any move was declared) and fit it."""
    from ray import tune

    uri, store = experiment.uri, ResultsStore(experiment)
    info = get_info(record["trainable"])
    mode = record.get("wandb_mode_resolved", "offline")
    trial_config = dict(record.get("trial_config") or {})
    if trial_config.get("deadline_file"):
        trial_config["deadline_file"] = relocation.here(trial_config["deadline_file"])
    with interrupt.stop_requests(echo), _clock(experiment, settings.time_budget_s, echo):
        started = ray_runtime.start(
            resolved or None, ray_runtime.worker_env(mode), num_cpus=settings.num_cpus or None
        )
        try:
            with tune_compat.restore_must_succeed():
                try:
                    tuner = tune.Tuner.restore(
                        uri,
                        trainable=trainable_with_resources(info, settings),
                        resume_unfinished=True,
                        resume_errored=True,
                        param_space=trial_config or None,
                    )
                except Exception as exc:  # a damaged tuner.pkl
                    raise tune_compat.RestoreFailed(exc) from exc
                _fit(tuner, name, experiment)
        except Exception as exc:
            failed = _behind(exc, tune_compat.RestoreFailed)
            if failed is None:
                raise
            marked = store.mark_unfinished_interrupted()
            now = f", and its {marked} unfinished trial(s) are now recorded as interrupted" if marked else ""
            raise SearchFailed(
                f"cannot restore Ray Tune's state of {name!r} ({failed}); nothing was run{now}. "
                f"Its finished trials stay; `orchestrator resume {name} --fresh` starts it over "
                f"beside them (or a new search: `orchestrator search --warm-start {name}`)"
            ) from None
        finally:
            ray_runtime.stop(started)
