"""Resuming an interrupted search, or starting it over: ``resume_search`` restores the
experiment from its storage (where it is now: a moved or copied experiment is followed, see
``orchestrator.relocation``) and finishes it; ``restart_search`` (``resume --fresh``) starts it
again from its saved settings, only when asked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from orchestrator import driver_lock, interrupt, ray_runtime, relocation
from orchestrator.compat import tune as tune_compat
from orchestrator.errors import SearchFailed, UserError
from orchestrator.plan_checks import check_cluster_resources, check_weights
from orchestrator.results import ResultsStore
from orchestrator.search import Outcome, behind, budget_clock, collect, fit, reconcile_study, run_search
from orchestrator.settings import SearchSettings, former_locations, load_settings, save_record
from orchestrator.storage import Location
from orchestrator.study_sync import study_url_of
from orchestrator.tuner import trainable_with_resources
from trainables.catalog import config_class, get_info
from trainables.config import ConfigError


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
        rows = store.read()[0]  # a damaged table is one line (CorruptResults) before Ray starts
        screen_checkpoints(experiment, [r["trial_id"] for r in rows if r.get("outcome") in UNFINISHED])
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
        _check_weights_files(record)
        _note_move(record, olds, experiment, study_url, echo)
        echo(f"resuming experiment {name} from {uri}")
        _restore_and_fit(name, record, experiment, settings, resolved, echo)
    objectives = [tuple(o) for o in record["objectives"]]
    # The resume ran to its end (an interruption raises before this): a trial still recorded
    # interrupted is one Tune's restored state did not hold (the earlier driver was killed before
    # its snapshot named it), which no later resume runs either: FAIL, not RUNNING, in the study.
    reconcile_study(study_url, record["name"], experiment, objectives, echo, interrupted="FAIL")
    return collect(uri, objectives)


def _check_weights_files(record: dict[str, Any]) -> None:
    """The weights files the trials load (``-s ref_classifier=``, or the reference the search
    stored in the experiment), where they are now, read as weights only: one replaced by a file
    that would run code stops the resume in one line."""
    try:
        config = config_class(record["trainable"]).from_dict(dict(record.get("trial_config") or {}))
    except (ConfigError, KeyError):  # a record of an older version: the trials still load safely
        return
    files = {name: relocation.here(path) for name, path in config.weights_files().items()}
    if files:
        check_weights(config.replace(**files))


#: The outcomes of trials that a resume continues from their checkpoints.
UNFINISHED = ("running", "pending", "paused", "interrupted", "error")


def screen_checkpoints(experiment: Location, trial_ids: list[str]) -> None:
    """Before anything runs, every checkpoint a resumed trial could load is read as weights
    only: one that would run code (replaced in a shared bucket, say) stops the resume with one
    line naming it. A damaged one is left to the trial, which skips it for an older one."""
    from trainables.reporting import CHECKPOINT_FILE
    from trainables.safe_load import NotAWeightsFile, UnsafeFile, load_weights

    wanted = {f"_{t}" for t in trial_ids}
    if not wanted:
        return
    for trial_dir in experiment.folders():
        if not any(trial_dir.uri.endswith(suffix) for suffix in wanted):
            continue
        for folder in trial_dir.folders("checkpoint_"):
            state = folder.child(CHECKPOINT_FILE)
            try:
                load_weights(state.read_bytes(), name=state.uri)
            except UnsafeFile as exc:
                hint = f"delete {folder.uri} to resume that trial from an older checkpoint"
                raise UserError(f"{exc}; the resume ran nothing ({hint})") from None
            except (NotAWeightsFile, FileNotFoundError):
                continue


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
    with interrupt.stop_requests(echo), budget_clock(experiment, settings.time_budget_s, echo):
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
                fit(tuner, name, experiment)
        except Exception as exc:
            failed = behind(exc, tune_compat.RestoreFailed)
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
