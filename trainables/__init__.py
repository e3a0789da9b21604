"""Training procedures launched by the searches: ``classic``, ``wgan_gp``, ``adaptive_ratio``.

Each module exposes ``SPEC`` (its config class and program) and ``train(config)``, a Ray Tune
function trainable that also runs on its own. Modules are imported on demand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainables.trial import TrainableSpec

TRAINABLES: tuple[str, ...] = ("classic", "wgan_gp", "adaptive_ratio")


def get_spec(name: str) -> TrainableSpec:
    """The :class:`~trainables.trial.TrainableSpec` of trainable ``name``."""
    if name not in TRAINABLES:
        raise KeyError(f"unknown trainable {name!r}; choose from {', '.join(TRAINABLES)}")
    return importlib.import_module(f"trainables.{name}").SPEC


def get_trainable(name: str) -> Callable[[dict], dict]:
    """The Ray Tune function trainable ``train(config)`` of trainable ``name``."""
    get_spec(name)
    return importlib.import_module(f"trainables.{name}").train
