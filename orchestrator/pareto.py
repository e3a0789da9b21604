"""Pareto-front arithmetic (all objectives maximised), shared by the multi-objective scheduler,
the results tables and the leaderboard. Pure Python: no Ray, no torch."""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is at least as good everywhere and better somewhere (all objectives maximised)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting: 0 for the front, 1 for the front without it, ... (maximising)."""
    n = len(points)
    dominated_by = [0] * n
    dominating: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j and dominates(points[i], points[j]):
                dominating[i].append(j)
            elif i != j and dominates(points[j], points[i]):
                dominated_by[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if dominated_by[i] == 0]
    level = 0
    while front:
        nxt = []
        for i in front:
            ranks[i] = level
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        front, level = nxt, level + 1
    return ranks


def crowding(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance within one set of points (boundary points: infinite)."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            dist[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return dist


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points."""
    return [i for i, r in enumerate(pareto_ranks(points)) if r == 0]
