"""Final robustness numbers from a maintained library: the Adversarial Robustness Toolbox (ART).

Attacks inside training and validation are the project's own torch code
(``trainables/attacks.py``); numbers that back a robustness claim come from here. Every attack
runs on the [0, 1] pixel scale (a thin wrapper maps images to the model's [-1, 1] inputs) with
the true labels, on the classifier in eval mode.

- ``pgd``: the project's PGD-40 (eps 0.3, step 0.01, one random start: the MNIST challenge
  protocol), for comparison with papers;
- ``pgd-restarts``: the project's PGD-100, step 0.01, 5 random restarts;
- ``apgd-ce``: ART's APGD with the cross-entropy loss (Croce & Hein 2020; 100 iterations, one
  random start, step 2 eps, halved at APGD's checkpoints);
- ``apgd-t``: ART's APGD, targeted, with its difference-of-logits-ratio (DLR) loss, against the
  ``targets`` most likely wrong classes (100 iterations each; 9 by default, every wrong class
  of a 10-class dataset, as in standard AutoAttack);
- ``square``: ART's Square attack (gradient-free; 5,000 queries, p_init 0.8): it cannot be fooled
  by masked gradients;
- ``autoattack``: per image the worst case of ``apgd-ce``, ``apgd-t`` and ``square``, each run
  only on the images the previous ones did not break. This is AutoAttack's standard suite as ART
  provides it; FAB-T, the fourth attack of the standard suite, is not in ART and is left out
  (on MNIST it rarely adds a success after APGD-T, Croce & Hein 2020, Table 2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from orchestrator.attack_model import Answers, UnitScale, channels_last
from trainables.attacks import eval_mode, pgd
from trainables.data import PIXEL_RANGE
from trainables.metrics import AUTOATTACK, FINAL_ATTACKS

ATTACKS = tuple(FINAL_ATTACKS)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    lo, hi = PIXEL_RANGE
    return (x - lo) / (hi - lo)


def art_classifier(
    model: nn.Module, input_shape: Sequence[int], num_classes: int, device: torch.device, remember=True
):
    """An ART ``PyTorchClassifier`` of ``model`` taking [0, 1] images; ``remember``: through
    :class:`~orchestrator.attack_model.Answers` (False: ART's plain estimator of the model)."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=(Answers(model) if remember else UnitScale(model)).eval(),
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        preprocessing=None,  # ART's default standardises by mean 0, std 1: a copy per query
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


@dataclass
class AttackResult:
    """Which images the classifier still gets right under an attack, and what it cost."""

    attack: str
    correct: np.ndarray
    seconds: float
    #: Per image: 0 resisted every part, -1 wrong without an attack, k the k-th part broke it
    #: (the parts of ``autoattack`` are :data:`AUTOATTACK`; other attacks have one part).
    broken_by: np.ndarray | None = None

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else math.nan


def _predict_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> np.ndarray:
    with torch.no_grad(), eval_mode(model):
        out = [model(x[i : i + batch]).argmax(1) == y[i : i + batch] for i in range(0, len(y), batch)]
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, bool)


def _art_attack(
    name: str, classifier, eps: float, batch_size: int, targeted: bool = False, queries: int = 5000
):
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    if name == "apgd-ce":
        return AutoProjectedGradientDescent(
            classifier,
            eps=eps,
            eps_step=2 * eps,
            max_iter=100,
            nb_random_init=1,
            batch_size=batch_size,
            loss_type="cross_entropy",
            verbose=False,
        )
    if name == "apgd-t":
        return AutoProjectedGradientDescent(
            classifier,
            eps=eps,
            eps_step=2 * eps,
            max_iter=100,
            nb_random_init=1,
            targeted=True,
            batch_size=batch_size,
            loss_type="difference_logits_ratio",
            verbose=False,
        )
    if name == "square":
        return SquareAttack(
            classifier,
            eps=eps,
            max_iter=queries,
            p_init=0.8,
            nb_restarts=1,
            batch_size=batch_size,
            verbose=False,
        )
    raise ValueError(f"unknown ART attack {name!r}")


def run_attack(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 0.3,
    targets: int = 9,
    square_queries: int = 5000,
    batch_size: int = 250,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    remember: bool = True,
) -> AttackResult:
    """Run attack ``name`` (see :data:`ATTACKS`) on images ``x`` in [-1, 1] with labels ``y``;
    ``eps`` on the [0, 1] pixel scale; ``targets``: APGD-T's target classes per image;
    ``square_queries``: Square's budget per image; ``remember``: ART queries the model through
    :class:`~orchestrator.attack_model.Answers` (False: ART's plain estimator, to compare)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    start = time.perf_counter()
    model, x = channels_last(model.eval()), channels_last(x)
    if name in ("pgd", "pgd-restarts"):
        steps, restarts = (40, 1) if name == "pgd" else (100, 5)
        gen = torch.Generator(device=x.device).manual_seed(seed)
        correct = []
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            adv = pgd(model, xb, yb, eps, steps=steps, step_size=0.01, restarts=restarts, generator=gen)
            correct.append(_predict_correct(model, adv, yb))
            _progress(progress, name, np.concatenate(correct), len(y), start)
        return AttackResult(name, np.concatenate(correct), time.perf_counter() - start)
    correct = _predict_correct(model, x, y)
    broken_by = np.where(correct, 0, -1)
    parts = AUTOATTACK if name == "autoattack" else (name,)
    for k, part in enumerate(parts, 1):
        label = f"{name} part {k}/{len(parts)} ({part})" if len(parts) > 1 else name
        todo = np.flatnonzero(correct)
        if len(todo):
            budget = (targets, square_queries, remember)
            broken = _art_part(part, model, x[todo], y[todo], eps, budget, batch_size, seed, label, progress)
            correct[todo[broken]] = False
            broken_by[todo[broken]] = k
    return AttackResult(name, correct, time.perf_counter() - start, broken_by)


def _progress(progress, label: str, correct: np.ndarray, total: int, start: float) -> None:
    """One progress line: images done, still correct, time so far and an estimate of the rest."""
    if progress is None or not len(correct):
        return
    spent = time.perf_counter() - start
    left = spent / len(correct) * (total - len(correct))
    progress(
        f"{label}: {len(correct):,}/{total:,} images, {correct.mean():.1%} of them still correct, "
        f"{_duration(spent)} so far, about {_duration(left)} left"
    )


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _art_part(
    part: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    budget: tuple[int, int, bool],
    batch: int,
    seed: int,
    label: str = "",
    progress: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Indices (into ``x``) of the images ``part`` makes the classifier get wrong, attacked
    ``batch`` images at a time (a progress line after each); ``budget``: APGD-T's target
    classes, Square's queries and whether the model remembers (:func:`art_classifier`)."""
    targets, queries, remember = budget
    np.random.seed(seed)  # ART draws its random starts and squares from NumPy's global RNG
    torch.manual_seed(seed)
    classifier = art_classifier(model, x.shape[1:], _num_classes(model, x), x.device, remember)
    x01 = to_unit(x).cpu().numpy().astype(np.float32)
    labels = y.cpu().numpy()
    targeted = part == "apgd-t"
    attack = _art_attack(part, classifier, eps, batch, targeted=targeted, queries=queries)
    broken = np.zeros(len(labels), bool)
    start = time.perf_counter()
    per_image = targets if targeted else 0
    for i in range(0, len(labels), batch):
        chunk = slice(i, i + batch)
        broken[chunk] = _art_chunk(attack, classifier, x01[chunk], labels[chunk], per_image, batch)
        _progress(progress, label or part, ~broken[: i + batch], len(labels), start)
    return np.flatnonzero(broken)


def _art_chunk(attack, classifier, x01: np.ndarray, labels: np.ndarray, targets: int, batch: int):
    """Which of these images ``attack`` breaks; ``targets`` > 0: a targeted attack at each
    image's ``targets`` most likely wrong classes in turn (APGD-T)."""
    if not targets:
        adv = attack.generate(x01, y=_one_hot(labels, classifier.nb_classes))
        return classifier.predict(adv, batch_size=batch).argmax(1) != labels
    logits = classifier.predict(x01, batch_size=batch)
    order = np.argsort(-logits, axis=1)
    broken = np.zeros(len(labels), bool)
    for rank in range(targets):
        todo = np.flatnonzero(~broken)
        if not len(todo):
            break
        # The rank-th most likely class other than the true one.
        wrong = np.array([[c for c in row if c != t][rank] for row, t in zip(order[todo], labels[todo])])
        adv = attack.generate(x01[todo], y=_one_hot(wrong, logits.shape[1]))
        pred = classifier.predict(adv, batch_size=batch).argmax(1)
        broken[todo[pred != labels[todo]]] = True
    return broken


def _one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(labels), n), np.float32)
    out[np.arange(len(labels)), labels] = 1
    return out


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])
