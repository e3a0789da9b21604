"""What a define-by-run space suggests, found by running it against recording trials.

- :func:`explore` walks every branch of the space's categorical choices and lists each
  parameter with its distribution and the branches it appears in (``orchestrator spaces``).
- :func:`distributions_for` replays the space with a finished trial's parameters and returns
  the distributions it drew them from (to rebuild an Optuna study from a Parquet file).
- :class:`ConstrainedSpace` fixes parameters or narrows ranges of a space, picklably.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


class _Recorder:
    """A stand-in for an Optuna trial: answers suggestions from ``values`` (or a default) and
    records the distribution of every suggestion."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = dict(values)
        self.distributions: dict[str, BaseDistribution] = {}
        self.order: list[str] = []

    def _record(self, name: str, dist: BaseDistribution, default: Any) -> Any:
        self.distributions[name] = dist
        self.order.append(name)
        return self.values.get(name, default)

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._record(name, FloatDistribution(low, high, log=log, step=step), low)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._record(name, IntDistribution(low, high, log=log, step=step), low)

    def suggest_categorical(self, name, choices):
        choices = list(choices)
        return self._record(name, CategoricalDistribution(choices), choices[0])


@dataclass(frozen=True)
class ParamInfo:
    name: str
    distribution: BaseDistribution
    #: Branches (categorical assignments) under which the parameter is suggested; empty when
    #: it is suggested in every branch.
    conditions: tuple[str, ...]

    def describe(self) -> str:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            text = "categorical {" + ", ".join(map(str, d.choices)) + "}"
        else:
            kind = "int" if isinstance(d, IntDistribution) else "float"
            text = f"{kind} [{d.low:g}, {d.high:g}]" + (" log" if d.log else "")
        if self.conditions:
            text += "  when " + " or ".join(self.conditions)
        return text


def explore(space: Callable[[Any], dict]) -> list[ParamInfo]:
    """Every parameter of ``space`` over all branches of its categorical choices."""
    seen: dict[str, BaseDistribution] = {}
    branches_of: dict[str, list[str]] = {}
    all_branches: list[str] = []
    pending: list[dict[str, Any]] = [{}]
    while pending:
        plan = pending.pop()
        rec = _Recorder(plan)
        space(rec)
        for name in rec.order:
            dist = rec.distributions[name]
            if isinstance(dist, CategoricalDistribution) and name not in plan:
                for choice in dist.choices[1:]:
                    pending.append({**plan, name: choice})
                plan = {**plan, name: dist.choices[0]}
        label = ", ".join(f"{k}={v}" for k, v in plan.items())
        all_branches.append(label)
        for name in rec.order:
            seen.setdefault(name, rec.distributions[name])
            branches_of.setdefault(name, []).append(label)
    infos = []
    for name, dist in seen.items():
        branches = branches_of[name]
        conditions: tuple[str, ...] = ()
        if len(branches) < len(all_branches):
            conditions = tuple(sorted(set(_common_condition(name, branches, all_branches))))
        infos.append(ParamInfo(name, dist, conditions))
    return infos


def _common_condition(name: str, branches: list[str], all_branches: list[str]) -> list[str]:
    """The categorical assignments that select ``branches`` (shortest description)."""
    parts = [dict(p.split("=", 1) for p in b.split(", ") if p) for b in branches]
    others = [dict(p.split("=", 1) for p in b.split(", ") if p) for b in all_branches if b not in branches]
    keys = set.intersection(*(set(p) for p in parts)) - {name}
    candidates = []
    for key in sorted(keys):
        values = {p[key] for p in parts}
        if not any(o.get(key) in values for o in others):
            candidates.append([f"{key}={v}" for v in sorted(values)])
    # The fewest values: "generator=gradient", not "adv_copies=1 or adv_copies=2" (a choice
    # that only exists under generator=gradient).
    return min(candidates, key=len) if candidates else branches


def distributions_for(space: Callable[[Any], dict], params: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The distributions ``space`` draws ``params`` from (the branch they select)."""
    rec = _Recorder(params)
    space(rec)
    return rec.distributions


class _OverrideTrial:
    def __init__(self, trial, fixed: Mapping[str, Any], ranges: Mapping[str, tuple[float, float]]):
        self._trial, self._fixed, self._ranges = trial, fixed, ranges

    def __getattr__(self, item):
        return getattr(self._trial, item)

    def suggest_float(self, name, low, high, *, step=None, log=False):
        if name in self._fixed:
            return self._fixed[name]
        low, high = self._ranges.get(name, (low, high))
        return self._trial.suggest_float(name, float(low), float(high), step=step, log=log)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        if name in self._fixed:
            return self._fixed[name]
        low, high = self._ranges.get(name, (low, high))
        return self._trial.suggest_int(name, int(low), int(high), step=step, log=log)

    def suggest_categorical(self, name, choices):
        if name in self._fixed:
            return self._fixed[name]
        return self._trial.suggest_categorical(name, choices)


class ConstrainedSpace:
    """``space`` with some parameters fixed (not searched) and some numeric ranges narrowed.

    A plain class of module-level functions, so Ray Tune can pickle the searcher holding it.
    Fixed values are returned as constants of every trial.
    """

    def __init__(self, space: Callable[[Any], dict], fixed=None, ranges=None):
        self.space = space
        self.fixed = dict(fixed or {})
        self.ranges = {k: tuple(v) for k, v in (ranges or {}).items()}
        self.__name__ = getattr(space, "__name__", "space")

    def __call__(self, trial) -> dict[str, Any]:
        constants = self.space(_OverrideTrial(trial, self.fixed, self.ranges)) or {}
        return {**self.fixed, **constants}
