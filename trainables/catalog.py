"""What the orchestrator needs to know about each trainable, without importing it (no torch).

A :class:`TrainableInfo` names the module that holds the trainable's ``SPEC`` (config class and
program) and ``train(config)``, what one iteration is, the keys of its progress line, a hook the
driver runs once before a search, and the sections it adds to ``orchestrator report``. Hooks and
sections are ``"module:function"`` references, imported only when used. A trainable defined
outside this package is added with :func:`register`; nothing in ``orchestrator/`` changes.

- ``prepare(cfg, store, echo) -> dict``: run on the driver before the first trial, with the
  validated base trial config, ``store(name, data) -> uri`` (writes a file into the
  experiment's storage) and a printer; returns config values to give every trial.
- a report section ``(ctx) -> list[str]``: Markdown lines for the experiment's best trial;
  ``ctx`` (``orchestrator.report.SectionContext``) offers the experiment's rows, matplotlib and
  a figure saver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
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


CATALOG: dict[str, TrainableInfo] = {}


def register(info: TrainableInfo) -> TrainableInfo:
    """Add (or replace) a trainable."""
    CATALOG[info.name] = info
    return info


def get_info(name: str) -> TrainableInfo:
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown trainable {name!r}; choose from {', '.join(CATALOG)}") from None


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


register(
    TrainableInfo(
        "classic",
        "trainables.classic",
        "epoch",
        ("train/loss", "train/acc", "val/acc", "val/fgsm_acc/eps0.3", "val/apgd_acc"),
        config="trainables.configs:ClassicConfig",
    )
)
register(
    TrainableInfo(
        "wgan_gp",
        "trainables.wgan_gp",
        "iteration",
        (
            "train/wasserstein",
            "train/gen_loss",
            "train/cls_loss",
            "val/acc",
            "gen/cls_acc",
            "gen/ref_acc",
            "gen/fid",
        ),
        prepare="trainables.wgan_gp:prepare_search",
        report_sections=("trainables.sections:stage_samples", "trainables.sections:stage_table"),
        config="trainables.configs:WganGpConfig",
    )
)
register(
    TrainableInfo(
        "adaptive_ratio",
        "trainables.adaptive_ratio",
        "cycle",
        (
            "ratio/k",
            "train/gen_loss",
            "train/cls_loss",
            "attack/gen_acc",
            "attack/pgd10_acc",
            "val/acc",
            "val/apgd_acc",
        ),
        report_sections=("trainables.sections:ratio_cycles",),
        config="trainables.configs:AdaptiveRatioConfig",
    )
)
