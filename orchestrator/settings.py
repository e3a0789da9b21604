"""What a search was asked to do, saved with the experiment (``orchestrator.json``).

:class:`SearchSettings` holds everything ``orchestrator search`` takes, under the same names as
its options; the plan (``orchestrator.plan``) validates it. The saved record adds what the plan
resolved (objectives, budget, base trial config, ...) so that ``resume``, ``results`` and
``report`` need no search space, no torch and no Ray to read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import UserError
from orchestrator.storage import SETTINGS_FILE, Location, default_storage


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``orchestrator search`` takes; saved with the experiment for ``resume``.

    ``config`` holds the ``-s NAME=VALUE`` values: a searched parameter named there is fixed
    (not searched), any other is a trainable parameter set for every trial.
    """

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
    grace_period: int = 0  # 0: the rung unit's default (1 iteration; 1/60 of --time-budget)
    reduction_factor: int = 3
    rung_unit: str = "iterations"  # what ASHA's rungs count: iterations or a trial's seconds
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str = ""  # "": a private local Ray instance
    num_cpus: int = 0  # local Ray only; 0: all cores
    seed: int = 0
    min_clean: float | None = None  # None: the dataset's default; 0: no constraint
    config: Mapping[str, Any] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    data_dir: str = ""
    wandb_project: str = "robust-orchestrator"
    wandb_mode: str = ""  # "": online with a key and a reachable server, else offline
    max_failures: int = 2
    keep_checkpoints: int = 2
    study_storage: str = ""  # "": sqlite:///<experiment>/study.db (see orchestrator.study)
    warm_start: str = ""  # an earlier experiment of the same space to start from
    warm_start_top: int = 3
    no_priors: bool = False  # True: do not run the space's priors first

    @classmethod
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SearchSettings:
        """The settings part of a saved record (the resolved extras are ignored)."""
        known = cls.fields()
        values = {k: v for k, v in record.items() if k in known}
        values["ranges"] = {k: tuple(v) for k, v in values.get("ranges", {}).items()}
        return cls(**values)


def experiment_location(name: str, storage: str | None = None) -> Location:
    return Location.parse(storage or default_storage()).child(name)


def save_record(experiment: Location, record: Mapping[str, Any]) -> None:
    """Write ``orchestrator.json`` (without ``experiment_uri``: where it was read from)."""
    experiment.child(SETTINGS_FILE).write_json({k: v for k, v in record.items() if k != "experiment_uri"})


def former_locations(record: Mapping[str, Any]) -> list[str]:
    """Where a saved experiment was before it was moved or copied to where it is now
    (``experiment_uri``): where its search ran, and where earlier resumes found it."""
    saved = []
    if record.get("name") and record.get("storage"):
        saved.append(experiment_location(record["name"], record["storage"]).uri)
    olds = dict.fromkeys([*record.get("former_locations", []), *saved])
    return [uri for uri in olds if uri != record["experiment_uri"]]


def load_settings(name: str, storage: str | None = None) -> dict[str, Any]:
    """The saved record of experiment ``name`` (one-line error if there is none), with its
    location under ``experiment_uri``."""
    loc = experiment_location(name, storage)
    path = loc.child(SETTINGS_FILE)
    if not path.exists():
        raise UserError(f"no experiment {name!r} under {loc.uri.rsplit('/', 1)[0]} (no {SETTINGS_FILE})")
    try:
        record = path.read_json()
    except ValueError as exc:
        raise UserError(f"{path.uri} is damaged and cannot be read ({exc})") from None
    record["experiment_uri"] = loc.uri
    return record
