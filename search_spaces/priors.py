"""Priors: the known-good configurations a space names, and how they fit a narrowed search.

Torch- and Optuna-free at import (the CLI lists spaces without them). A search runs its space's
priors first (Optuna enqueued trials, the mechanism of
``--warm-start``), so it never starts worse than the recipe the docs print; ``--no-priors``
searches blind. A prior names every parameter the space searches in its branch, with a value
inside the space's distribution (:func:`check_prior`; a prior that stops fitting its space is a
test failure, not a silent skip). A search that fixes parameters (``-s``) or narrows ranges
(``--range``) adapts a prior to itself (:func:`fit_prior`): a fixed numeric value replaces the
prior's, a value outside a narrowed range moves to the nearest bound, and a prior whose branch
the search excludes (a fixed categorical choice it does not share) is dropped; each change is
one line of notice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prior:
    """A known-good point of a space: every parameter the space searches in its branch
    (``params``), and where the recipe comes from (``source``)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


def check_prior(space: Callable[[Any], dict], prior: Prior) -> None:
    """Raise ``ValueError`` unless ``prior`` names exactly the parameters ``space`` searches in
    the prior's branch, each inside its distribution."""
    from search_spaces.introspect import distributions_for

    dists = distributions_for(space, prior.params)
    missing = sorted(set(dists) - set(prior.params))
    extra = sorted(set(prior.params) - set(dists))
    if missing or extra:
        raise ValueError(f"prior {prior.name!r}: missing {missing}, not in the space {extra}")
    for key, dist in dists.items():
        if not _contains(dist, prior.params[key]):
            raise ValueError(f"prior {prior.name!r}: {key}={prior.params[key]!r} is outside {dist}")


def fit_prior(
    space: Callable[[Any], dict],
    prior: Prior,
    fixed: Mapping[str, Any],
    ranges: Mapping[str, tuple[float, float]],
) -> tuple[dict[str, Any] | None, str]:
    """``prior``'s point in a search of ``space`` with ``fixed`` values and narrowed ``ranges``:
    ``(point, notice)``. ``point`` holds the searched parameters only (None: the search
    excludes the prior's branch); ``notice`` says what changed ("" when nothing did)."""
    from optuna.distributions import CategoricalDistribution

    from search_spaces.introspect import ConstrainedSpace, distributions_for

    dists = distributions_for(space, prior.params)
    changes = []
    for key, value in fixed.items():
        if key not in prior.params or prior.params[key] == value:
            continue
        if isinstance(dists.get(key), CategoricalDistribution):
            return None, (
                f"prior {prior.name} dropped: it needs {key}={prior.params[key]}, this search fixes "
                f"{key}={value}"
            )
        changes.append(f"{key} {prior.params[key]} -> {value} (fixed)")
    point = {}
    for key, dist in distributions_for(ConstrainedSpace(space, fixed, ranges), prior.params).items():
        if key not in prior.params:
            changes.append(f"{key} left to the searcher")
            continue
        value = prior.params[key]
        if not isinstance(dist, CategoricalDistribution) and not dist.low <= value <= dist.high:
            moved = min(max(value, dist.low), dist.high)
            changes.append(f"{key} {value} -> {moved} (--range {key}={dist.low:g}:{dist.high:g})")
            value = moved
        point[key] = value
    notice = f"prior {prior.name}: " + ", ".join(changes) if changes else ""
    return point, notice


def fit_priors(
    space: Callable[[Any], dict],
    priors: tuple[Prior, ...],
    fixed: Mapping[str, Any],
    ranges: Mapping[str, tuple[float, float]],
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """``(name, point)`` of every prior in this search (dropped ones left out, a point that
    fitting made equal to an earlier one once) and the notices of what changed."""
    fitted, notices = [], []
    for prior in priors:
        point, notice = fit_prior(space, prior, fixed, ranges)
        if notice:
            notices.append(notice)
        if point is not None and point not in [p for _, p in fitted]:
            fitted.append((prior.name, point))
    return fitted, notices


def _contains(dist, value) -> bool:
    if hasattr(dist, "choices"):
        return value in dist.choices
    return isinstance(value, int | float) and not isinstance(value, bool) and dist.low <= value <= dist.high
