"""Training procedures launched by the searches: ``classic``, ``wgan_gp``, ``adaptive_ratio``.

Each module exposes ``SPEC`` (its config class and program) and ``train(config)``, which runs a
trial on its own with a progress line per iteration. :mod:`trainables.catalog` describes them
without importing them; modules are imported on demand. Nothing here imports Ray.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from trainables.catalog import get_info, names

if TYPE_CHECKING:
    from trainables.trial import TrainableSpec


def __getattr__(name: str):
    if name == "TRAINABLES":  # every trainable declared (built-in, plugins), read when asked
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_spec(name: str) -> TrainableSpec:
    """The :class:`~trainables.trial.TrainableSpec` of trainable ``name``."""
    return importlib.import_module(get_info(name).module).SPEC


def get_trainable(name: str) -> Callable[[dict], dict]:
    """``train(config)`` of trainable ``name``: one trial on its own, printing progress."""
    return importlib.import_module(get_info(name).module).train
