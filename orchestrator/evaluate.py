"""``orchestrator evaluate``: an exported classifier under the strong attacks of
:mod:`orchestrator.robustness`, on its dataset's test split.

Clean accuracy is measured on the whole test split; every attack runs on the same fixed subset of
``n`` test images (seed 1, the subset ``benchmarks/learned_attacker.py`` uses), so the rows of one
call, and of calls with the same ``n``, are comparable. ``worst`` is per image the worst case over
the attacks asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import UserError

#: The subset seed shared with benchmarks/learned_attacker.py.
SUBSET_SEED = 1


@dataclass(frozen=True)
class Evaluation:
    model: str
    dataset: str
    eps: float
    clean: float
    clean_n: int
    n: int
    attacks: dict[str, float]
    seconds: dict[str, float]
    worst: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "eps": self.eps,
            "eps_scale": "[0, 1] pixels",
            "clean": self.clean,
            "clean_n": self.clean_n,
            "n": self.n,
            **{f"{a}_acc": v for a, v in self.attacks.items()},
            **{f"{a}_s": v for a, v in self.seconds.items()},
            "worst": self.worst,
        }


def check_request(attacks: Sequence[str], n: int, eps: float) -> None:
    """One-line :class:`UserError` for a request that cannot run (before any loading)."""
    from orchestrator.robustness import ATTACKS

    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise UserError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
    if not attacks:
        raise UserError("name at least one --attack")
    if n < 1:
        raise UserError(f"--images must be at least 1 (got {n})")
    if not 0.0 < eps <= 1.0:
        raise UserError(f"--eps {eps} must be in (0, 1] (the [0, 1] pixel scale)")


def evaluate_classifier(
    path: str | Path,
    attacks: Sequence[str],
    *,
    n: int = 1000,
    eps: float = 0.3,
    data_dir: str | None = None,
    device: str = "auto",
    echo: Callable[[str], None] = print,
) -> Evaluation:
    check_request(attacks, n, eps)
    import torch

    from orchestrator.export import load_classifier
    from orchestrator.robustness import run_attack
    from trainables.data import DatasetUnavailable, load_arrays
    from trainables.evaluation import accuracy
    from trainables.runtime import Runtime

    try:
        model, meta = load_classifier(path)
    except (ValueError, OSError, RuntimeError) as exc:
        raise UserError(f"{path}: {str(exc).splitlines()[0]}") from None
    rt = Runtime.create(device, "fp32", channels_last=False)
    model = model.to(rt.device).eval()
    try:
        images, labels = load_arrays(meta["dataset"], "test", data_dir)
    except DatasetUnavailable as exc:
        raise UserError(str(exc)) from None
    x = images.to(rt.device).float().div_(127.5).sub_(1.0)
    y = labels.to(rt.device)
    with torch.no_grad():
        clean = float(accuracy(model, x, y))
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n].to(rt.device)
    xs, ys = x[idx], y[idx]
    echo(f"{path}: {meta['dataset']} test split, clean {clean:.2%} on {len(y):,} images")
    accs, seconds, masks = {}, {}, []
    for name in attacks:
        result = run_attack(name, model, xs, ys, eps=eps, progress=lambda line: echo(f"  {line}"))
        accs[name], seconds[name] = result.accuracy, result.seconds
        masks.append(result.correct)
        echo(f"  {name}: {result.accuracy:.2%} of {len(ys):,} ({result.seconds:.0f} s)")
    worst = np.logical_and.reduce(masks)
    return Evaluation(
        model=str(path),
        dataset=meta["dataset"],
        eps=eps,
        clean=clean,
        clean_n=len(y),
        n=len(ys),
        attacks=accs,
        seconds=seconds,
        worst=float(worst.mean()),
    )
