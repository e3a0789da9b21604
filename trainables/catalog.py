"""What the orchestrator needs to know about each trainable, without importing it (no torch).

A :class:`TrainableInfo` names the module that holds the trainable's ``SPEC`` (config class and
program) and ``train(config)``, what one iteration is, the keys of its progress line, a hook the
driver runs once before a search, and the sections it adds to ``orchestrator report``. Hooks and
sections are ``"module:function"`` references, imported only when used. Each trainable's entry
is declared beside its search space (``search_spaces/<name>.py``: ``TRAINABLE``); one defined
outside this repository comes through an ``orchestrator.spaces`` entry point or :func:`register`;
nothing in ``orchestrator/`` changes.

- ``prepare(cfg, store, echo) -> dict``: run on the driver before the first trial, with the
  validated base trial config, ``store(name, data) -> uri`` (writes a file into the
  experiment's storage) and a printer; returns config values to give every trial.
- a report section ``(ctx) -> list[str]``: Markdown lines for the experiment's best trial;
  ``ctx`` (``orchestrator.report.SectionContext``) offers the experiment's rows, matplotlib and
  a figure saver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainableInfo:
    name: str
    #: Import path of the module with ``SPEC`` and ``train(config)``.
    module: str
    #: What one iteration (one report) is: "epoch", "cycle", "iteration".
    unit: str
    #: Keys shown on the progress line of ``orchestrator train`` and in Ray Tune's table.
    headline: tuple[str, ...]
    prepare: str = ""
    report_sections: tuple[str, ...] = ()
    #: ``"module:Class"`` of its config class in a module that does not import torch, for
    #: ``orchestrator params`` ("": the class the trainable's ``SPEC`` names).
    config: str = ""
    #: Settings beyond the shared tiny ones (synthetic data, a few images, few attack steps)
    #: that keep a trial of it to seconds on a CPU: tests, benchmarks and smoke runs use them.
    smoke: Mapping[str, Any] = field(default_factory=dict)


#: The settings every trainable's smoke run shares: synthetic data, few images, few attack steps.
SMOKE_SHARED: Mapping[str, Any] = {
    "dataset": "synthetic",
    "train_subset": 256,
    "eval_subset": 100,
    "robust_n": 32,
    "test_robust_n": 32,
    "pgd_steps": 2,
    "pgd_step_size": 0.1,
    "apgd_steps": 2,
    "test_apgd_steps": 2,
    "test_apgd_targets": 2,
    "test_square_queries": 20,
}

CATALOG: dict[str, TrainableInfo] = {}

#: Where trainables declare themselves: each space module declares its trainable
#: (``search_spaces``, which also loads installed plugins); imported by name the first time
#: the catalog is read, so that this package does not depend on it.
DECLARED_IN = "search_spaces"


def register(info: TrainableInfo) -> TrainableInfo:
    """Add (or replace) a trainable."""
    CATALOG[info.name] = info
    return info


def names() -> tuple[str, ...]:
    """Every trainable declared (the built-in ones, installed plugins and registered ones)."""
    _discover()
    return tuple(CATALOG)


def get_info(name: str) -> TrainableInfo:
    if name not in CATALOG:
        _discover()
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown trainable {name!r}; choose from {', '.join(CATALOG)}") from None


def smoke_config(name: str) -> dict[str, Any]:
    """A trial of trainable ``name`` in seconds on a CPU (tests, benchmarks, smoke runs)."""
    return {**SMOKE_SHARED, **get_info(name).smoke}


def _discover() -> None:
    importlib.import_module(DECLARED_IN)


def config_class(name: str) -> Any:
    """The config class of trainable ``name``, without importing the trainable's module where
    the catalog names a torch-free one."""
    info = get_info(name)
    if info.config:
        return resolve(info.config)
    return importlib.import_module(info.module).SPEC.config_cls


def resolve(reference: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` reference names."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
