"""The search's rules about a trial, in one place (pure Python, no Ray, torch or pyarrow): its
constraint (``--min-clean``: feasibility, and the violation Optuna is told) and the signs of
gradient masking in its robust numbers. The searcher, the tables and the leaderboard read them
from here; ``orchestrator.leaderboard`` only displays."""

from __future__ import annotations

import itertools
import math
from typing import Any

from trainables.metrics import AUTOATTACK, FINAL_ATTACKS

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
STRONG_KEYS = (
    *(FINAL_ATTACKS[a] for a in ("autoattack", *AUTOATTACK)),  # orchestrator evaluate
    "apgd_acc",  # a trial's own validation and test
    "apgd_square_acc",
)


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
