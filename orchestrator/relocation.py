"""A moved or copied experiment: the objects Ray Tune restores point where it is now.

Ray Tune pickles a search's objects into its experiment: the callbacks and the scheduler hold the
experiment's URI, the searcher holds the study's storage URL and the deadline file, and every
trial's config holds the deadline file. After ``mv`` or ``cp -r``, those paths still name the old
folder, so a resume would write into it (the original of a copy) or create it again. A resuming
driver that finds its experiment somewhere else declares the move with :func:`moved` before Ray
Tune unpickles anything. Each of those objects then reads its paths through :func:`here`. Trial
workers get the moves in their environment (:data:`ENV`, see ``orchestrator.ray_runtime``).

This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator

#: The moves, as JSON ``{old: new}``, for trial workers (set in their Ray runtime environment).
ENV = "ORCHESTRATOR_MOVED"
#: The ways a location appears in a stored value: itself, a SQLite URL, an Optuna journal URL.
_PREFIXES = ("", "sqlite:///", "journal://")
_MOVES: dict[str, str] = {}


def moved(olds: Iterable[str], new: str) -> dict[str, str]:
    """Declare that what was at each of ``olds`` is now at ``new`` (for this process and, through
    :func:`worker_env`, for the trials it starts); the moves declared."""
    new = new.rstrip("/")
    for old in olds:
        old = (old or "").rstrip("/")
        if old and old != new:
            _MOVES[old] = new
    return dict(_MOVES)


def forget() -> None:
    _MOVES.clear()


@contextlib.contextmanager
def experiment_moved(olds: Iterable[str], new: str) -> Iterator[dict[str, str]]:
    """:func:`moved` for the duration of a resume."""
    try:
        yield moved(olds, new)
    finally:
        forget()


def _moves() -> dict[str, str]:
    if _MOVES:
        return _MOVES
    raw = os.environ.get(ENV)
    if not raw:
        return {}
    try:
        return {str(k): str(v) for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError):
        return {}


def here(value: str) -> str:
    """``value`` (a path, URI, ``sqlite:///`` or ``journal:///`` URL) with a moved
    experiment's old location replaced by its new one; anything else unchanged."""
    if not value:
        return value
    for old, new in _moves().items():
        for prefix in _PREFIXES:
            head = prefix + old
            if value == head or value.startswith(head + "/"):
                return prefix + new + value[len(head) :]
    return value


def worker_env() -> dict[str, str]:
    """The environment that carries the moves to trial workers (empty when nothing moved)."""
    return {ENV: json.dumps(_MOVES)} if _MOVES else {}
