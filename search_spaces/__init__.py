"""Optuna define-by-run search spaces, one per trainable, and their registry.

Each space is a module-level function of an Optuna trial that only calls ``trial.suggest_*``
and plain ``if``s and returns a dict of constants (module-level, so that Ray Tune can pickle the
searcher). Every suggested name is a parameter of the trainable's config. The registry says
which trainable a space drives, what it optimises (validation keys only: a search never sees
the test split), its default budget, and its priors: known-good configurations that every
search runs first (``--no-priors`` searches blind), so no search starts worse than the recipe
the project's docs print.

**A space declares itself, and its trainable, once.** A module of this package that defines
``SPACE`` (a :class:`SpaceSpec`) and ``TRAINABLE`` (its :class:`~trainables.catalog.TrainableInfo`,
torch-free) is found and registered when the package is imported; so is every module named by
a package's ``orchestrator.spaces`` entry point (a trainable that lives outside this repository,
``pip install``-ed beside it), or added with :func:`register`. A new trainable in this
repository is its module in ``trainables/`` and its space module here, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib import metadata

from search_spaces.priors import Prior
from search_spaces.spec import PARETO, Objective, SpaceSpec
from trainables import catalog
from trainables.catalog import TrainableInfo

__all__ = ["PARETO", "SPACES", "Objective", "Prior", "SpaceSpec", "get_space", "register"]

#: The entry-point group of out-of-tree spaces: ``name = "package.module"`` (a module with
#: ``SPACE`` and ``TRAINABLE``).
ENTRY_POINTS = "orchestrator.spaces"
#: Modules of this package that are not spaces.
_HELPERS = {"introspect", "priors", "spec"}

SPACES: dict[str, SpaceSpec] = {}


def register(space: SpaceSpec, trainable: TrainableInfo | None = None) -> SpaceSpec:
    """Add (or replace) a space and, where given, its trainable's catalog entry."""
    if trainable is not None:
        catalog.register(trainable)
    SPACES[space.name] = space
    return space


def _register_module(module) -> None:
    space = getattr(module, "SPACE", None)
    if isinstance(space, SpaceSpec):
        register(space, getattr(module, "TRAINABLE", None))


def _discover() -> None:
    """Register this package's spaces, then those of installed ``orchestrator.spaces`` entry
    points (one that fails to load is one line on stderr, not a crash)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name not in _HELPERS:
            _register_module(importlib.import_module(f"{__name__}.{info.name}"))
    for entry in metadata.entry_points(group=ENTRY_POINTS):
        try:
            _register_module(entry.load())
        except Exception as exc:  # a broken plugin must not take the built-in spaces down
            print(f"orchestrator: plugin {entry.name} ({entry.value}) not loaded: {exc}", file=sys.stderr)


def get_space(name: str) -> SpaceSpec:
    try:
        return SPACES[name]
    except KeyError:
        raise KeyError(f"unknown space {name!r}; choose from {', '.join(SPACES)}") from None


_discover()
