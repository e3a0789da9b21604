"""Ordering and formatting trials for people: the leaderboard of ``search``, ``results``,
``report`` and ``export``. Pure Python on rows of ``trials.parquet``."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

#: The metric of the search constraint (``--min-clean``): clean validation accuracy.
CLEAN_METRIC = "val/acc"


def is_feasible(row: dict[str, Any], constraint: dict[str, Any] | None) -> bool:
    """Whether a trial row meets the search's constraint (``{"metric", "min"}`` or None):
    its last value of the metric at least the minimum. A trial that never reported it is not."""
    if not constraint:
        return True
    v = row.get(f"last/{constraint['metric']}")
    return v is not None and math.isfinite(v) and v >= constraint["min"]


def constraint_violation(value: float | None, constraint: dict[str, Any]) -> float:
    """Optuna's constraint value for a trial: <= 0 when feasible (``min - value``)."""
    if value is None or not math.isfinite(value):
        return 1.0
    return float(constraint["min"] - value)


#: Points by which accuracy may rise with eps, or PGD beat FGSM, before a trial is flagged
#: (sampling noise of a 1,000-image subset is about +-3 points at 50%).
MASKING_TOLERANCE = 0.02
#: Points by which a strong attack may fall below PGD-40 before a trial is flagged.
STRONG_GAP = 0.05
#: Report keys of strong attacks (``orchestrator evaluate`` and strong validation attacks).
STRONG_KEYS = ("aa_acc", "apgd_ce_acc", "apgd_t_acc", "square_acc", "apgd_acc", "apgd_square_acc")


def masking_flags(row: dict[str, Any]) -> list[str]:
    """Signs that a trial's robust numbers come from gradient masking, not robustness, from
    its ``last/`` values (validation and test): PGD or APGD accuracy above FGSM accuracy at the
    same eps (an iterative attack cannot be weaker than its own first step), accuracy rising with eps
    (a larger ball contains the smaller one), a strong attack (AutoAttack, APGD, Square) more
    than 5 points below PGD-40. The PGD eps is taken from ``config/pgd_eps`` (default 0.3)."""
    flags = []
    pgd_eps = row.get("config/pgd_eps", 0.3)
    for split in ("val", "test"):
        prefix = f"last/{split}/"
        fgsm = sorted(
            (float(k[len(prefix + "fgsm_acc/eps") :]), v)
            for k, v in row.items()
            if k.startswith(prefix + "fgsm_acc/eps") and isinstance(v, (int, float)) and math.isfinite(v)
        )
        pgd = row.get(prefix + "pgd_acc")
        for name, key in (("PGD", "pgd_acc"), ("APGD", "apgd_acc")):
            iterative = row.get(prefix + key)
            for eps, acc in fgsm:
                if iterative is None or not math.isclose(eps, pgd_eps):
                    continue
                if iterative > acc + MASKING_TOLERANCE:
                    flags.append(f"{split}: {name} {iterative:.0%} above FGSM {acc:.0%} at eps {eps:g}")
        for (e1, a1), (e2, a2) in itertools.pairwise(fgsm):
            if a2 > a1 + MASKING_TOLERANCE:
                rise = f"{a1:.0%} at {e1:g}, {a2:.0%} at {e2:g}"
                flags.append(f"{split}: FGSM accuracy rises with eps ({rise})")
        for key in STRONG_KEYS:
            strong = row.get(prefix + key)
            if pgd is not None and strong is not None and strong < pgd - STRONG_GAP:
                flags.append(f"{split}: {key} {strong:.0%} more than 5 points below PGD {pgd:.0%}")
    return flags


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
EVALUATION_COLUMNS = (
    "last/test/pgd40_acc",
    "last/test/pgd100x5_acc",
    "last/test/apgd_ce_acc",
    "last/test/apgd_t_acc",
    "last/test/square_acc",
    "last/test/aa_acc",
    "last/test/strong_worst_acc",
)


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
