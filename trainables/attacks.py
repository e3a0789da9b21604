"""White-box attacks as pure functions of ``(model, x, y, eps, ...)``.

Every ``eps`` and ``step_size`` is on the [0, 1] pixel scale and converted to model units
internally (inputs live in [-1, 1], so eps 0.3 moves a pixel by at most 0.6 model units).
Attacks never modify their input, always return images inside the valid range, and run the
model in eval mode (BatchNorm uses its running statistics, so the attack does not depend on
the batch), restoring the previous mode afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainables.data import PIXEL_RANGE, to_model_scale
from trainables.models import folded


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode for the block, then restore each module's previous mode."""
    modes = [[(m, m.training) for m in module.modules()] for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for pairs in modes:
            for m, training in pairs:
                m.training = training


def check_eps(eps: float, name: str = "eps") -> None:
    if not 0 <= eps <= 1:
        raise ValueError(f"{name}={eps} must be in [0, 1] (the [0, 1] pixel scale)")


def _input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example cross-entropy at ``x``, its gradient w.r.t. ``x`` (no parameter grads) and
    the logits."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x).float()
        losses = F.cross_entropy(logits, y, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return losses.detach(), grad, logits.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al., 2015): one signed-gradient step of size
    ``eps`` ([0, 1] pixel scale)."""
    check_eps(eps)
    lo, hi = PIXEL_RANGE
    if eps == 0:
        return x.detach().clone()
    with eval_mode(model):
        _, grad, _ = _input_gradient(model, x, y)
    return (x.detach() + to_model_scale(eps) * grad.sign()).clamp(lo, hi)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 40,
    step_size: float = 0.01,
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-infinity PGD (Madry et al., 2018): ``steps`` signed-gradient steps of ``step_size``,
    projected onto the ``eps`` ball and the valid range; with ``restarts`` > 1 the restart with
    the highest loss is kept per example. ``eps`` and ``step_size`` are on the [0, 1] scale.
    The MNIST challenge protocol is eps 0.3, 40 steps of 0.01, random start.
    """
    check_eps(eps)
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if restarts < 1:
        raise ValueError(f"restarts={restarts} must be >= 1")
    if step_size <= 0:
        raise ValueError(f"step_size={step_size} must be > 0 (the [0, 1] pixel scale)")
    lo, hi = PIXEL_RANGE
    x0 = x.detach()
    if eps == 0:
        return x0.clone()
    e, a = to_model_scale(eps), to_model_scale(step_size)
    model = folded(model)  # eval mode, input gradients only: the same function, cheaper
    best = x0.clone()
    best_loss = torch.full((x0.shape[0],), -float("inf"), device=x0.device)
    with eval_mode(model):
        for _ in range(restarts):
            if random_start:
                noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
                adv = (x0 + (2 * noise - 1) * e).clamp(lo, hi)
            else:
                adv = x0.clone()
            for _ in range(steps):
                _, grad, _ = _input_gradient(model, adv, y)
                adv = adv + a * grad.sign()
                adv = torch.min(torch.max(adv, x0 - e), x0 + e).clamp(lo, hi)
            with torch.no_grad():
                loss = F.cross_entropy(model(adv).float(), y, reduction="none")
            better = loss > best_loss
            best = torch.where(better.view(-1, *([1] * (x0.dim() - 1))), adv, best)
            best_loss = torch.where(better, loss, best_loss)
    return best.detach()


def adversarial_examples(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    method: str,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The training-time attack of adversarial training: ``fgsm`` or ``pgd`` (random start,
    ``step_size`` defaults to 2.5 * eps / steps as in Madry et al.)."""
    if method == "fgsm":
        return fgsm(model, x, y, eps)
    if method == "pgd":
        size = step_size if step_size else 2.5 * eps / steps
        return pgd(model, x, y, eps, steps=steps, step_size=size, generator=generator)
    raise ValueError(f"unknown attack {method!r}; expected fgsm or pgd")


def normalized_gradient(grad: torch.Tensor) -> torch.Tensor:
    """The gradient scaled to unit RMS per image and channel (the learned attacker's input)."""
    rms = grad.float().pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()
    return (grad / (rms + 1e-12)).to(grad.dtype)


@dataclass
class AttackTrace:
    """What a learned attacker did, one entry per recursive step.

    ``adv[t]`` keeps its graph to the attacker's parameters when the trace was tracked;
    ``grads[t]`` (the classifier's per-example loss gradient at ``adv[t]``), ``losses[t]``
    (per-example cross-entropy) and ``correct`` (whether the classifier still predicts the
    true class after the last step) are detached.
    """

    adv: list[torch.Tensor]
    grads: list[torch.Tensor]
    losses: list[torch.Tensor]
    correct: torch.Tensor | None = None

    def final(self) -> torch.Tensor:
        return self.adv[-1].detach()


def learned_attack_steps(
    attacker: nn.Module,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    *,
    track: bool = False,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> AttackTrace:
    """Run a :class:`~trainables.models.GradientAttacker` for its ``steps`` recursive steps.

    Step t: the attacker sees the image, the normalised gradient of the classifier's
    cross-entropy at the current adversarial image (before the first step: a uniform random
    start in the eps ball, as PGD's, or the clean image without ``random_start``),
    the perturbation so far and the latent code ``z``; its direction moves the perturbation by
    at most ``step_size * eps``, then the perturbation is projected onto the eps ball and the
    image onto the valid range. The classifier runs in eval mode and no gradient reaches its
    weights (only input gradients are taken). With ``track`` the adversarial images keep their
    graph to the attacker's parameters, so that a loss on them trains it through every step.
    """
    lo, hi = PIXEL_RANGE
    e = to_model_scale(attacker.eps)
    a = e * attacker.step_size
    x0 = x.detach()
    model = folded(model)  # eval mode, input gradients only: the same function, cheaper
    trace = AttackTrace([], [], [])
    with eval_mode(model):
        if random_start:
            noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            delta = ((x0 + (2 * noise - 1) * e).clamp(lo, hi) - x0).detach()
        else:
            delta = torch.zeros_like(x0)
        _, grad, _ = _input_gradient(model, x0 + delta, y)
        for _ in range(attacker.steps):
            with torch.set_grad_enabled(track):
                direction = attacker.direction(x0, normalized_gradient(grad), delta, z).to(x0.dtype)
                delta = (delta + a * direction).clamp(-e, e)
                adv = (x0 + delta).clamp(lo, hi)
                delta = adv - x0  # the perturbation actually applied, inside the pixel range
            losses, grad, logits = _input_gradient(model, adv.detach(), y)
            trace.adv.append(adv)
            trace.grads.append(grad)
            trace.losses.append(losses)
        trace.correct = logits.argmax(1) == y
    return trace


def learned_attack(
    attacker: nn.Module,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial images of a trained learned attacker (a fresh latent code per image)."""
    z = attacker.sample_latent(len(y), x.device, generator=generator)
    return learned_attack_steps(attacker, model, x, y, z, generator=generator).final()
