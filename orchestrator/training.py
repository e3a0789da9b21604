"""``orchestrator train``: one trial of a trainable, outside Ray."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.plan_checks import check_weights
from trainables import get_spec
from trainables.config import ConfigError
from trainables.data import DatasetUnavailable, prepare_dataset, resolve_data_root
from trainables.reporting import ConsoleReporter
from trainables.runtime import device_problem
from trainables.trial import run_trial


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> dict; values are parsed as JSON when they can be (numbers,
    booleans, lists) and kept as strings otherwise. The trainable's config validates them."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML file holding a flat dict of trainable parameters."""
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of parameter names to values")
    return data


def prepare_train_config(trainable: str, values: Mapping[str, Any], data_dir: str | None):
    """Validate a trial config and make sure its dataset is there (both fail with one line)."""
    spec = get_spec(trainable)
    values = dict(values)
    if data_dir:
        values["data_dir"] = str(resolve_data_root(data_dir))
    try:
        cfg = spec.config_cls.from_dict(values)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    problem = device_problem(cfg.device)  # this machine trains it
    if problem:
        raise UserError(problem)
    try:
        prepare_dataset(cfg.dataset, cfg.data_dir or None)
    except DatasetUnavailable as exc:
        raise UserError(str(exc)) from None
    check_weights(cfg)
    return spec, cfg


def train_once(
    trainable: str,
    values: Mapping[str, Any],
    *,
    data_dir: str | None = None,
    checkpoint_dir: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run one trial with a progress line per iteration; resumes from ``checkpoint_dir``."""
    spec, cfg = prepare_train_config(trainable, values, data_dir)
    reporter = ConsoleReporter(spec.name, cfg.budget, spec.unit, spec.headline, checkpoint_dir, echo)
    return run_trial(spec, cfg, reporter)
