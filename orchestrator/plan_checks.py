"""The checks of a search's settings that need more than one value: choices, ``--range``
bounds against the space and the config's valid ranges, objectives the settings would switch
off, and resources a trial asks for that the machine or the cluster does not have. Each raises
a one-line :class:`~orchestrator.errors.UserError` (exit code 2) before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from orchestrator import ray_runtime
from orchestrator.choices import RUNG_UNITS
from orchestrator.errors import UserError
from orchestrator.settings import SearchSettings
from search_spaces.introspect import ParamInfo
from trainables.data import DatasetUnavailable, prepare_dataset
from trainables.evaluation import EvalSpec, metric_keys
from trainables.trial import TrainableSpec, TrialConfig

#: The longest experiment name (its folder, W&B group and study are named after it).
MAX_NAME = 100
#: ``--time-budget`` below this is refused: a trial's first iteration and test evaluation take
#: about a minute on a 2-core CPU.
MIN_TIME_BUDGET_S = 60.0


def check_choice(value: str, choices, what: str) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")


def check_ranges(
    params: Mapping[str, ParamInfo], trainable: TrainableSpec, ranges: Mapping[str, Any], space: str
) -> dict:
    fields = {f.name: f for f in dataclasses.fields(trainable.config_cls)}
    checked = {}
    for name, bounds in ranges.items():
        if name not in params:
            raise UserError(f"--range {name}: not a parameter of space {space} ({', '.join(params)})")
        dist = params[name].distribution
        if not hasattr(dist, "low"):
            raise UserError(f"--range {name}: categorical; fix one value with -s {name}=VALUE instead")
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


def check_objectives_reported(objectives: list[tuple[str, str]], base: TrialConfig) -> None:
    """Refuse an objective from the evaluation suite that these settings switch off (e.g. the
    PGD objective with ``-s pgd_steps=0``), which would otherwise fail at the first result."""
    every = set(metric_keys(EvalSpec(apgd_steps=1, pgd_steps=1), "val"))
    reported = set(metric_keys(base.eval_spec(), "val"))
    for metric, _ in objectives:
        if metric in every and metric not in reported:
            raise UserError(
                f"the objective {metric} would never be reported: these settings switch its "
                "evaluation off (see -s apgd_steps, val_pgd, pgd_steps, fgsm_eps, noise_eval)"
            )


def check_local_resources(settings: SearchSettings) -> None:
    """A trial that asks a private local Ray for more CPUs or GPUs than this machine has would
    stay pending for ever: refuse it before Ray starts."""
    import os

    cpus = settings.num_cpus or os.cpu_count() or 1
    if settings.num_cpus and settings.num_cpus > (os.cpu_count() or 1):
        raise UserError(f"--num-cpus {settings.num_cpus}: this machine has {os.cpu_count()} CPUs")
    if settings.cpus_per_trial > cpus:
        raise UserError(
            f"--cpus-per-trial {settings.cpus_per_trial:g}: the local Ray has {cpus} CPUs, "
            "so no trial could start"
        )
    if settings.gpus_per_trial > 0:
        import torch

        gpus = torch.cuda.device_count()
        if settings.gpus_per_trial > gpus:
            raise UserError(
                f"--gpus-per-trial {settings.gpus_per_trial:g}: this machine has {gpus} GPU(s), so no trial "
                "could start (use --address to join a cluster with GPUs)"
            )


def check_cluster_resources(settings: SearchSettings, nodes: list[dict[str, float]]) -> None:
    """A trial runs on one node: refuse CPUs or GPUs per trial that no alive node of the joined
    cluster has (its trials would stay pending for ever)."""
    for flag, key, wanted in (
        ("--cpus-per-trial", "CPU", settings.cpus_per_trial),
        ("--gpus-per-trial", "GPU", settings.gpus_per_trial),
    ):
        most = max((node.get(key, 0.0) for node in nodes), default=0.0)
        if wanted > most:
            raise UserError(
                f"{flag} {wanted:g}: the largest node of the cluster at {settings.address} has "
                f"{most:g} {key}(s), so no trial could start"
            )


def check_numbers(settings: SearchSettings) -> None:
    """Counts, resources, budgets and thresholds that are wrong whatever else is set."""
    if settings.num_samples < 0 or settings.max_iterations < 0 or settings.max_concurrent < 0:
        raise UserError("--num-samples, --max-iterations and --max-concurrent must not be negative")
    if settings.cpus_per_trial <= 0:
        raise UserError("--cpus-per-trial must be positive")
    gpus = settings.gpus_per_trial
    if gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
        raise UserError("--gpus-per-trial must be a fraction of one GPU (0.25) or a whole number")
    if not settings.address:
        check_local_resources(settings)
    if settings.time_budget_s and settings.time_budget_s < MIN_TIME_BUDGET_S:
        raise UserError(
            f"--time-budget {settings.time_budget_s:g}s is shorter than a trial's first iteration and its "
            f"test evaluation can take; give at least {MIN_TIME_BUDGET_S:g}s"
        )
    if settings.min_clean is not None and not 0.0 <= settings.min_clean <= 1.0:
        raise UserError(f"--min-clean {settings.min_clean} must be in [0, 1] (a validation accuracy)")
    if settings.grace_period < 0 or settings.reduction_factor < 2:
        raise UserError("--grace-period must be >= 1 and --reduction-factor >= 2")
    if settings.rung_unit not in RUNG_UNITS:
        raise UserError(f"--rung-unit {settings.rung_unit!r}: choose from {', '.join(RUNG_UNITS)}")
    if settings.rung_unit == "seconds" and not settings.time_budget_s:
        raise UserError("--rung-unit seconds needs --time-budget (the rungs are shares of it)")


def check_name(name: str) -> str:
    if "/" in name or name.startswith(".") or not name.isprintable():
        raise UserError(f"--name {name!r}: a plain folder name, please")
    if len(name) > MAX_NAME:  # a folder name is at most 255 bytes; W&B and Ray add to it
        raise UserError(f"--name is {len(name)} characters long; at most {MAX_NAME}, please")
    return name


def check_weights(base: TrialConfig) -> None:
    """Every weights file the settings name (``-s ref_classifier=...``) is there and holds weights
    only: one that would run code is refused before any work starts, and never runs."""
    files = base.weights_files()
    if not files:
        return
    from trainables.safe_load import check_weights_files

    try:
        check_weights_files(files)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_environment(settings: SearchSettings, base: TrialConfig, check_dataset: bool) -> str:
    """The dataset is there (or can be fetched) and the cluster, if any, can run a trial; the
    cluster's address (``""``: a private local Ray)."""
    if check_dataset:
        try:
            prepare_dataset(base.dataset, base.data_dir or None)
        except DatasetUnavailable as exc:
            raise UserError(str(exc)) from None
    check_weights(base)
    address = ray_runtime.check_address(settings.address) if settings.address else ""
    if address and not address.startswith("ray://"):
        check_cluster_resources(settings, ray_runtime.cluster_nodes(address))
    return address
