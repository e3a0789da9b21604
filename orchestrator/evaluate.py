"""``orchestrator evaluate``: classifiers under the strong attacks of
:mod:`orchestrator.robustness`, on their dataset's test split. Final numbers, never a search
signal (searches optimise validation metrics).

A target is an exported classifier (``orchestrator export``) or an experiment: its best
completed trial, its ``--top N`` or one ``--trial``, read from their checkpoints. An experiment's
results go back beside it, in ``evaluations.parquet`` (one row per trial and run, ``test/aa_acc``
and so on), and every reader (``results``, ``report``, ``export``, the masking flags) shows them as
the trial's ``last/test/...`` values (``orchestrator.results.latest_evaluations`` says which).

Clean accuracy is measured on the whole test split; every attack runs on the same fixed subset of
``n`` test images (seed 1, the subset ``benchmarks/learned_attacker.py`` uses), so the rows of one
call, and of calls with the same ``n``, are comparable. ``strong_worst`` is per image the worst
case over the attacks asked for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import UserError
from trainables.metrics import FINAL_ATTACKS, WORST_KEY

#: The subset seed shared with benchmarks/learned_attacker.py.
SUBSET_SEED = 1
#: The report key of each attack (``test/<key>``).
KEYS = FINAL_ATTACKS


@dataclass(frozen=True)
class Evaluation:
    target: str
    dataset: str
    eps: float
    clean: float
    clean_n: int
    n: int
    attacks: dict[str, float]
    seconds: dict[str, float]
    worst: float
    trial_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "trial_id": self.trial_id,
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

    def result_row(self) -> dict[str, Any]:
        """The trial's row of ``evaluations.parquet``."""
        row: dict[str, Any] = {"trial_id": self.trial_id, "evaluated_at": time.time()}
        row.update({f"test/{KEYS[a]}": v for a, v in self.attacks.items()})
        if len(self.attacks) > 1:
            row[f"test/{WORST_KEY}"] = self.worst
        row["test/eval_n"] = self.n
        row["eval_eps"] = self.eps
        row["eval_attacks"] = ",".join(self.attacks)
        return row


def check_request(attacks: Sequence[str], n: int, eps: float, top: int = 1) -> None:
    """One-line :class:`UserError` for a request that cannot run (before any loading)."""
    unknown = [a for a in attacks if a not in KEYS]
    if unknown:
        raise UserError(f"unknown attack {unknown[0]!r}; choose from {', '.join(KEYS)}")
    if not attacks:
        raise UserError("name at least one --attack")
    if n < 1:
        raise UserError(f"--images must be at least 1 (got {n})")
    if top < 1:
        raise UserError(f"--top must be at least 1 (got {top})")
    if not 0.0 < eps <= 1.0:
        raise UserError(f"--eps {eps} must be in (0, 1] (the [0, 1] pixel scale)")


def attack_test_split(
    model,
    dataset: str,
    attacks: Sequence[str],
    *,
    target: str,
    n: int,
    eps: float,
    data_dir: str | None,
    device: str,
    echo: Callable[[str], None],
    trial_id: str | None = None,
    on_attack: Callable[[Evaluation], None] | None = None,
) -> Evaluation:
    """Clean accuracy on ``dataset``'s test split and each attack on its fixed subset, with a
    progress line per batch of images; ``on_attack`` gets the evaluation so far after each
    attack (to save it)."""
    import torch

    from orchestrator.robustness import run_attack
    from trainables.data import DatasetUnavailable, load_arrays
    from trainables.evaluation import accuracy
    from trainables.runtime import Runtime

    rt = Runtime.create(device, "fp32", channels_last=False)
    model = model.to(rt.device).eval()
    try:
        images, labels = load_arrays(dataset, "test", data_dir)
    except DatasetUnavailable as exc:
        raise UserError(str(exc)) from None
    x = images.to(rt.device).float().div_(127.5).sub_(1.0)
    y = labels.to(rt.device)
    with torch.no_grad():
        clean = float(accuracy(model, x, y))
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n].to(rt.device)
    xs, ys = x[idx], y[idx]
    echo(f"{target}: {dataset} test split, clean {clean:.2%} on {len(y):,} images")
    accs, seconds, masks = {}, {}, []
    evaluation = None
    for name in attacks:
        result = run_attack(name, model, xs, ys, eps=eps, progress=lambda line: echo(f"  {line}"))
        accs[name], seconds[name] = result.accuracy, result.seconds
        masks.append(result.correct)
        echo(f"  {name}: {result.accuracy:.2%} of {len(ys):,} ({result.seconds:.0f} s)")
        evaluation = Evaluation(
            target=target,
            dataset=dataset,
            eps=eps,
            clean=clean,
            clean_n=len(y),
            n=len(ys),
            attacks=dict(accs),
            seconds=dict(seconds),
            worst=float(np.logical_and.reduce(masks).mean()),
            trial_id=trial_id,
        )
        if on_attack is not None:
            on_attack(evaluation)
    return evaluation


def check_device(device: str) -> None:
    """``--device``: auto, cpu or cuda[:N], and a GPU for cuda (one line, before any work)."""
    from trainables.runtime import device_problem

    problem = device_problem(device)
    if problem:
        raise UserError(problem)


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
    """An exported classifier file."""
    check_request(attacks, n, eps)
    from orchestrator.export import load_classifier

    try:
        model, meta = load_classifier(path)
    except ValueError as exc:  # not one of ours: the message names the file
        raise UserError(str(exc).splitlines()[0]) from None
    except (OSError, RuntimeError) as exc:
        raise UserError(f"{path}: {str(exc).splitlines()[0]}") from None
    return attack_test_split(
        model,
        meta["dataset"],
        attacks,
        target=str(path),
        n=n,
        eps=eps,
        data_dir=data_dir,
        device=device,
        echo=echo,
        trial_id=meta.get("trial_id"),
    )


def evaluate_experiment(
    experiment,
    attacks: Sequence[str],
    *,
    trial_id: str | None = None,
    top: int = 1,
    n: int = 1000,
    eps: float = 0.3,
    data_dir: str | None = None,
    device: str = "auto",
    echo: Callable[[str], None] = print,
) -> list[Evaluation]:
    """The chosen trials of an experiment (a :class:`~orchestrator.storage.Location`); each
    trial's row of ``evaluations.parquet`` is saved again after each of its attacks, so an
    interruption loses no attack that finished."""
    check_request(attacks, n, eps, top)
    from orchestrator.export import build_classifier, classifier_meta, pick_trials, read_checkpoint
    from orchestrator.results import ResultsStore
    from trainables.data import DATASETS

    rows = pick_trials(experiment, trial_id, top)
    store = ResultsStore(experiment)
    run = uuid.uuid4().hex[:12]  # this run's rows, which no other evaluate run replaces
    done = []
    for row in rows:
        state = read_checkpoint(experiment, row["checkpoint_path"])
        config = state["config"]
        spec = DATASETS[config["dataset"]]
        model = build_classifier(classifier_meta(config), state["program"]["classifier"])
        # Saved after every attack: an interruption keeps each attack that finished.
        evaluation = attack_test_split(
            model,
            spec.name,
            attacks,
            target=f"trial {row['trial_id']}",
            n=n,
            eps=eps,
            data_dir=data_dir or config.get("data_dir") or None,
            device=device,
            echo=echo,
            trial_id=row["trial_id"],
            on_attack=lambda so_far: store.save_evaluations([{**so_far.result_row(), "evaluation_id": run}]),
        )
        done.append(evaluation)
    return done
