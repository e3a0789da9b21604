"""Parameter importances from finished trials: PED-ANOVA (Watanabe et al., IJCAI 2023) in NumPy.

A parameter matters when its values among the best trials are distributed differently from its
values among all trials. For each parameter, the importance is the Pearson divergence
``sum_x p_all(x) * (p_top(x) / p_all(x) - 1)^2`` between the two distributions, estimated with
Parzen windows on a grid of the parameter's range (on a log grid for log-scale parameters) or
smoothed frequencies for categorical ones; importances are normalised to sum to 1. "Best"
follows the objective's direction explicitly: the top ``quantile`` of trials by value for a
maximised objective, the bottom one for a minimised objective. When every trial has the same
value, importances are undefined (:class:`Undefined`).

Parameters come as ``{name, kind, low, high, log, choices}`` dicts, as the search wrote them
into the results' metadata, so this needs neither Optuna nor the search space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GRID = 50


class Undefined(ValueError):
    """Importances cannot be computed (too few trials, or one value for all)."""


def _unit(values: np.ndarray, param: Mapping[str, Any]) -> np.ndarray:
    lo, hi = float(param["low"]), float(param["high"])
    if param.get("log"):
        values, lo, hi = np.log(values), math.log(lo), math.log(hi)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(values)


def _density(x: np.ndarray, n_all: int) -> np.ndarray:
    """A Parzen estimate on the grid, mixed with a uniform prior (weight 1 / (n + 1))."""
    grid = (np.arange(GRID) + 0.5) / GRID
    if len(x) == 0:
        return np.full(GRID, 1.0 / GRID)
    bandwidth = max(1.06 * max(float(np.std(x)), 1e-3) * n_all ** (-1 / 5), 1.0 / GRID)
    kernel = np.exp(-0.5 * ((grid[None, :] - x[:, None]) / bandwidth) ** 2).sum(0)
    kernel /= kernel.sum()
    prior = 1.0 / (len(x) + 1)
    return (1 - prior) * kernel + prior / GRID


def _frequencies(values: Sequence[Any], choices: Sequence[Any]) -> np.ndarray:
    index = {repr(c): i for i, c in enumerate(choices)}
    counts = np.zeros(len(choices))
    for v in values:
        if repr(v) in index:
            counts[index[repr(v)]] += 1
    prior = 1.0 / (len(values) + 1)
    probs = counts / max(counts.sum(), 1)
    return (1 - prior) * probs + prior / len(choices)


def _divergence(p_top: np.ndarray, p_all: np.ndarray) -> float:
    return float(np.sum(p_all * (p_top / p_all - 1.0) ** 2))


def importances(
    trials: Sequence[Mapping[str, Any]],
    params: Sequence[Mapping[str, Any]],
    objective: str,
    mode: str,
    *,
    quantile: float = 0.1,
    min_trials: int = 3,
) -> dict[str, float]:
    """Importance of each parameter for ``objective`` (``mode`` max or min), most important
    first. ``trials`` are flat rows with ``config/<name>`` and the objective's value under
    ``objective``."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode {mode!r} must be max or min")
    rows = [t for t in trials if isinstance(t.get(objective), (int, float)) and math.isfinite(t[objective])]
    if len(rows) < min_trials:
        raise Undefined(f"importances need at least {min_trials} finished trials with {objective}")
    values = np.array([float(t[objective]) for t in rows])
    if np.ptp(values) == 0:
        raise Undefined(f"every trial has the same {objective} ({values[0]:g}): importances are undefined")
    order = np.argsort(-values if mode == "max" else values, kind="stable")
    n_top = max(2, math.ceil(quantile * len(rows)))
    top = {int(i) for i in order[:n_top]}
    out = {}
    for param in params:
        name = param["name"]
        present = [i for i, t in enumerate(rows) if t.get(f"config/{name}") is not None]
        if len(present) < 2:
            continue
        top_present = [i for i in present if i in top]
        if param["kind"] == "categorical":
            choices = list(param["choices"])
            p_all = _frequencies([rows[i][f"config/{name}"] for i in present], choices)
            p_top = _frequencies([rows[i][f"config/{name}"] for i in top_present], choices)
        else:
            x = _unit(np.array([float(rows[i][f"config/{name}"]) for i in present]), param)
            p_all = _density(x, len(present))
            p_top = _density(x[[present.index(i) for i in top_present]], len(present))
        out[name] = _divergence(p_top, p_all) if top_present else 0.0
    total = sum(out.values())
    if not out or total <= 0:
        raise Undefined("no parameter separates the best trials from the others")
    return dict(sorted(((k, v / total) for k, v in out.items()), key=lambda kv: -kv[1]))
