"""APGD (Croce & Hein, ICML 2020) in the project's own torch code: APGD-CE, APGD-DLR and the
targeted APGD-T, and the cascade ``apgd_robust`` the validation metric ``apgd_acc`` uses.

As in :mod:`trainables.attacks`, every ``eps`` is on the [0, 1] pixel scale, inputs live in
[-1, 1], attacks never modify their input and run the model in eval mode. The final numbers of
``orchestrator evaluate`` come from a maintained library instead (``orchestrator.robustness``);
``benchmarks/apgd_agreement.py`` compares the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.attacks import check_eps, eval_mode
from trainables.data import PIXEL_RANGE, to_model_scale


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference-of-logits-ratio loss, per example: the true class's margin to
    the best other class, divided by the gap between the first and third logits (invariant to
    the logits' scale, so a classifier cannot escape it by inflating them)."""
    ordered, idx = logits.sort(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = torch.where(idx[:, -1] == y, ordered[:, -2], ordered[:, -1])
    return -(true - other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's targeted DLR loss, per example: the target class's margin over the true
    class, divided by the gap between the first logit and the mean of the third and fourth
    (APGD-T's loss; needs at least four classes). Maximising it moves the example to ``target``."""
    ordered = logits.sort(dim=1).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    wanted = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - wanted) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12)


def _apgd_checkpoints(steps: int) -> list[int]:
    """Iterations after which APGD may halve its step. Croce & Hein's p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in their code's integer form: the first
    period is 22% of the steps, each next one 3% shorter, never below 6%."""
    period = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, at = [], period
    while at <= steps:
        points.append(at)
        period = max(period - shrink, shortest)
        at += period
    return points


def _check(eps: float, steps: int, loss: str, target: torch.Tensor | None) -> None:
    check_eps(eps)
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if loss not in ("ce", "dlr", "dlr-t"):
        raise ValueError(f"loss={loss!r} must be ce, dlr or dlr-t")
    if (loss == "dlr-t") != (target is not None):
        raise ValueError("a target class per example is given with loss='dlr-t' and only then")


def _loss_and_grad(model: nn.Module, v: torch.Tensor, y: torch.Tensor, loss: str, target):
    """Per-example losses at ``v``, their input gradient and the logits."""
    v = v.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(v).float()
        if loss == "ce":
            losses = F.cross_entropy(logits, y, reduction="none")
        elif loss == "dlr":
            losses = dlr_loss(logits, y)
        else:
            losses = dlr_targeted_loss(logits, y, target)
        (grad,) = torch.autograd.grad(losses.sum(), v)
    return losses.detach(), grad, logits.detach()


class _Track:
    """What APGD keeps across iterates, per example: the first image that fooled the model and
    whether it resisted so far; the highest-loss point with its gradient; the step size and
    what decides at each checkpoint whether it halves."""

    def __init__(
        self, adv: torch.Tensor, losses: torch.Tensor, grad: torch.Tensor, correct: torch.Tensor, eta
    ):
        self.shape = (-1, *([1] * (adv.dim() - 1)))
        self.fooling, self.correct = adv.clone(), correct
        self.best, self.best_loss, self.best_grad = adv.clone(), losses.clone(), grad.clone()
        self.eta = torch.full((adv.shape[0],), eta, device=adv.device, dtype=adv.dtype)
        self.previous_loss, self.rises = losses.clone(), torch.zeros_like(losses)
        self.best_at_checkpoint, self.halved_last = losses.clone(), torch.ones_like(correct)

    def record(
        self, adv: torch.Tensor, losses: torch.Tensor, grad: torch.Tensor, fooled: torch.Tensor
    ) -> None:
        self.fooling = torch.where((fooled & self.correct).view(self.shape), adv, self.fooling)
        self.correct &= ~fooled
        self.rises += (losses > self.previous_loss).to(self.rises.dtype)
        self.previous_loss = losses
        improved = losses > self.best_loss
        self.best = torch.where(improved.view(self.shape), adv, self.best)
        self.best_grad = torch.where(improved.view(self.shape), grad, self.best_grad)
        self.best_loss = torch.where(improved, losses, self.best_loss)

    def checkpoint(self, adv: torch.Tensor, grad: torch.Tensor, period: int, rho: float):
        """Halve the step where the loss rose in fewer than ``rho`` of the ``period`` steps, or
        did not improve while the step stayed; those restart from their best point."""
        halve = (self.rises <= rho * period) | (
            ~self.halved_last & (self.best_at_checkpoint >= self.best_loss)
        )
        self.eta = torch.where(halve, self.eta / 2, self.eta)
        adv = torch.where(halve.view(self.shape), self.best, adv)
        grad = torch.where(halve.view(self.shape), self.best_grad, grad)
        self.halved_last, self.best_at_checkpoint = halve, self.best_loss.clone()
        self.rises.zero_()
        return adv, grad

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.where(self.correct.view(self.shape), self.best, self.fooling).detach(), self.correct


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    loss: str = "ce",
    target: torch.Tensor | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L-infinity APGD (Croce & Hein, ICML 2020) with the cross-entropy (``ce``) or DLR
    (``dlr``) loss, or targeted at class ``target`` per example with the targeted DLR loss
    (``dlr-t``, APGD-T; success is still any wrong class): step 2 eps, momentum 0.75, and at
    every checkpoint the step halves (and the search restarts from the best point) for the
    examples whose loss rose in fewer than ``rho`` of the steps since the last checkpoint, or did
    not improve while the step stayed the same. Returns ``(adv, correct)``: per example an image
    that fools the model if any iterate did (else the highest-loss one), and whether the model
    resisted every iterate.
    ``eps`` on the [0, 1] scale; the model is used in eval mode, its weights get no gradient.
    """
    _check(eps, steps, loss, target)
    lo, hi = PIXEL_RANGE
    x0, e = x.detach(), to_model_scale(eps)

    def project(v: torch.Tensor) -> torch.Tensor:
        return torch.min(torch.max(v, x0 - e), x0 + e).clamp(lo, hi)

    with eval_mode(model):
        if random_start and eps > 0:
            noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            adv = project(x0 + (2 * noise - 1) * e)
        else:
            adv = x0.clone()
        losses, grad, logits = _loss_and_grad(model, adv, y, loss, target)
        track = _Track(adv, losses, grad, logits.argmax(1) == y, 2 * e)
        if eps == 0:
            return track.fooling, track.correct
        previous, checkpoints, last_checkpoint = adv.clone(), _apgd_checkpoints(steps), 0
        for k in range(steps):
            z = project(adv + track.eta.view(track.shape) * grad.sign())
            step = z if k == 0 else project(adv + momentum * (z - adv) + (1 - momentum) * (adv - previous))
            previous, adv = adv, step
            losses, grad, logits = _loss_and_grad(model, adv, y, loss, target)
            track.record(adv, losses, grad, logits.argmax(1) != y)
            if k + 1 in checkpoints:
                adv, grad = track.checkpoint(adv, grad, k + 1 - last_checkpoint, rho)
                last_checkpoint = k + 1
    return track.result()


def apgd_robust(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    targets: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which examples resist APGD-CE and then, on those it did not break, APGD-DLR
    (``targets`` 0: AutoAttack's two untargeted gradient attacks) or APGD-T against each of the
    ``targets`` most likely wrong classes in turn (AutoAttack's standard APGD-CE + APGD-T)."""
    _, correct = apgd(model, x, y, eps, steps=steps, loss="ce", generator=generator)
    if not targets:
        return _resisting(model, x, y, eps, correct, steps=steps, loss="dlr", generator=generator)
    with torch.no_grad(), eval_mode(model):
        ranked = model(x).float().argsort(dim=1, descending=True)
    wrong = ranked[ranked != y[:, None]].view(len(y), -1)  # wrong classes, most likely first
    for rank in range(min(targets, wrong.shape[1])):
        correct = _resisting(
            model, x, y, eps, correct, steps=steps, loss="dlr-t", target=wrong[:, rank], generator=generator
        )
    return correct


def _resisting(model, x, y, eps, correct: torch.Tensor, **attack) -> torch.Tensor:
    """``correct`` after attacking the examples it marks with :func:`apgd` (``attack``'s
    settings; a ``target`` per example is indexed with them)."""
    todo = correct.nonzero().squeeze(1)
    if not todo.numel():
        return correct
    if attack.get("target") is not None:
        attack["target"] = attack["target"][todo]
    _, still = apgd(model, x[todo], y[todo], eps, **attack)
    correct = correct.clone()
    correct[todo] = still
    return correct
