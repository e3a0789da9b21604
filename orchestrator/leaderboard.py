"""Ordering and formatting trials for people: the leaderboard of ``search``, ``results``,
``report`` and ``export``. Pure Python on rows of ``trials.parquet``."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from trainables.metrics import FINAL_ATTACKS, WORST_KEY


def leaderboard(
    trials: Iterable[dict[str, Any]], objectives: Sequence[tuple[str, str]], top: int | None = None
) -> list[dict[str, Any]]:
    """Trials ranked for display: completed trials first, feasible ones (``feasible``, set by
    the results reader when the search has a ``--min-clean`` constraint) before infeasible
    ones, then the Pareto front (multi-objective), then the first objective's last value. So a
    collapsed classifier never outranks one that meets the constraint."""
    rows = list(trials)
    metric, mode = objectives[0]
    sign = 1.0 if mode == "max" else -1.0

    def key(r):
        v = r.get(f"last/{metric}")
        v = -math.inf if v is None or not math.isfinite(v) else sign * v
        return (r.get("outcome") != "completed", r.get("feasible") is False, not r.get("pareto", False), -v)

    rows.sort(key=key)
    return rows[:top] if top else rows


#: The final numbers ``orchestrator evaluate`` adds (``orchestrator.evaluate.KEYS``), shown when present.
EVALUATION_COLUMNS = tuple(f"last/test/{key}" for key in (*FINAL_ATTACKS.values(), WORST_KEY))


def display_columns(
    rows: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, str]], searched: Sequence[str] = ()
) -> list[str]:
    """Trial, outcome, objectives, clean/robust accuracy (with ``orchestrator evaluate``'s
    final numbers), the ``searched`` parameters, and the other config keys that vary."""
    columns = ["trial_id", "outcome", "iterations"]
    if any(r.get("train_time_s") for r in rows):
        columns.append("train_time_s")
    for key in [f"last/{m}" for m, _ in objectives] + [
        "last/val/acc",
        "last/val/apgd_acc",
        "last/val/pgd_acc",
        "last/test/acc",
        "last/test/pgd_acc",
        "last/test/apgd_acc",
        "last/test/apgd_square_acc",
        *EVALUATION_COLUMNS,
    ]:
        if key not in columns and any(r.get(key) is not None for r in rows):
            columns.append(key)
    if any(r.get("feasible") is False for r in rows):
        columns.append("feasible")
    if any(r.get("pareto") for r in rows):
        columns.append("pareto")
    shown = {f"config/{name}" for name in searched}
    for key in sorted({k for r in rows for k in r if k.startswith("config/")}):
        values = {repr(r.get(key)) for r in rows}
        if key in shown or len(values) > 1:
            columns.append(key)
    if any(r.get("masking") for r in rows):
        columns.append("masking")  # last: the flags are sentences
    return columns


def returned_line(row: dict[str, Any], searched: Sequence[str], unit: str = "iteration") -> str:
    """What a search returns, in one line: the trial, how long it trained, its configuration."""
    config = " ".join(
        f"{name}={_cell(row[f'config/{name}'])}" for name in searched if row.get(f"config/{name}") is not None
    )
    trained = f"{row.get('iterations')} {unit}(s)"
    if row.get("train_time_s"):
        trained += f", {row['train_time_s']:.0f} s of training"
        if row.get("iterations"):  # the speed this machine ran at: results scale with it
            trained += f", {row['train_time_s'] / row['iterations']:.1f} s per {unit}"
    return f"returned: trial {row['trial_id']} ({row.get('outcome')}, {trained}): {config}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    return str(value)


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str = "table") -> str:
    """``table`` (aligned text), ``csv`` or ``json`` (one object per trial)."""
    if fmt == "json":

        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return json.dumps([{c: clean(r.get(c)) for c in columns} for r in rows], indent=1, default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        return out.getvalue().rstrip("\n")
    headers = [c.replace("config/", "").replace("last/", "") for c in columns]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
