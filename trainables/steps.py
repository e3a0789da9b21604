"""Losses and single optimisation steps shared by the trainables.

Each step takes models, an optimiser and a batch already on the device, performs exactly one
optimiser update and returns detached metric tensors. Nothing here synchronises with the host:
callers accumulate the tensors in a :class:`Meter` and read them once per iteration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainables.attacks import eval_mode, learned_attack_steps
from trainables.data import to_model_scale
from trainables.runtime import Runtime


class Meter:
    """Running means of metric tensors, kept on the device until :meth:`means` is read."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor, n: int = 1) -> None:
        """Add a mean ``value`` over ``n`` items."""
        v = value.detach().float() * n
        self._sums[name] = self._sums[name] + v if name in self._sums else v
        self._counts[name] = self._counts.get(name, 0) + n

    def update(self, values: dict[str, torch.Tensor], n: int = 1) -> None:
        for name, value in values.items():
            self.add(name, value, n)

    def means(self) -> dict[str, torch.Tensor]:
        return {k: self._sums[k] / self._counts[k] for k in self._sums}


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Stop gradients into the modules' parameters for the block (saves their weight grads)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def apply(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def classifier_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rt: Runtime,
    parts: Sequence[tuple[str, torch.Tensor, torch.Tensor, float]],
) -> dict[str, torch.Tensor]:
    """One update of a classifier on a weighted sum of mean cross-entropies.

    ``parts`` is a list of ``(name, x, y, weight)``; all parts go through one forward pass so
    that BatchNorm sees them as one batch (clean and adversarial images together, as in
    adversarial training). Returns ``loss`` (the weighted sum), ``acc`` (on the first part with
    a weight) and, with several parts, ``{name}_loss`` for each.
    """
    parts = [p for p in parts if p[3] > 0]
    model.train()
    x = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    with rt.autocast():
        logits = model(x).float()
    out: dict[str, torch.Tensor] = {}
    loss = logits.new_zeros(())
    start = 0
    for i, (name, _, yi, weight) in enumerate(parts):
        part_logits = logits[start : start + len(yi)]
        part_loss = F.cross_entropy(part_logits, yi)
        loss = loss + weight * part_loss
        if len(parts) > 1:
            out[f"{name}_loss"] = part_loss.detach()
        if i == 0:
            out["acc"] = (part_logits.argmax(1) == yi).float().mean()
        start += len(yi)
    apply(optimizer, loss)
    out["loss"] = loss.detach()
    return out


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP penalty E[(|grad D(x_hat)|_2 - 1)^2] at random interpolates of real and fake.

    Computed in fp32 (double backward under bf16 is too coarse for a unit-norm target).
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = critic(x_hat, y)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def critic_step(
    critic: nn.Module,
    generator: nn.Module,
    optimizer: torch.optim.Optimizer,
    rt: Runtime,
    real: torch.Tensor,
    y: torch.Tensor,
    gp_lambda: float,
) -> dict[str, torch.Tensor]:
    """One critic update: minimise D(fake) - D(real) + lambda * GP. Fakes are conditioned on
    the real batch's labels, so both sides have the same class mix."""
    z = torch.randn(len(y), generator.latent_dim, device=real.device)
    with torch.no_grad(), rt.autocast():
        fake = generator(z, y)
    fake = fake.float()
    with rt.autocast():
        d_real = critic(real, y).float().mean()
        d_fake = critic(fake, y).float().mean()
    gp = gradient_penalty(critic, real, fake, y)
    wasserstein = d_real - d_fake
    loss = -wasserstein + gp_lambda * gp
    apply(optimizer, loss)
    return {"wasserstein": wasserstein.detach(), "gp": gp.detach(), "critic_loss": loss.detach()}


def generator_step(
    generator: nn.Module,
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    rt: Runtime,
    y: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One generator update: minimise -D(G(z, y), y)."""
    z = torch.randn(len(y), generator.latent_dim, device=y.device)
    with frozen(critic), rt.autocast():
        loss = -critic(generator(z, y), y).float().mean()
    apply(optimizer, loss)
    return {"gen_loss": loss.detach()}


def true_class_probability(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean probability the classifier gives the true class: seed 001's generator loss."""
    probs = F.softmax(classifier(x).float(), dim=1)
    return probs.gather(1, y.view(-1, 1)).mean()


def perturbation_step(
    perturber: nn.Module,
    classifier: nn.Module,
    optimizer: torch.optim.Optimizer,
    rt: Runtime,
    x: torch.Tensor,
    y: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One update of the perturbation generator against a frozen classifier (eval mode):
    minimise the classifier's mean probability of the true class on perturbed images."""
    perturber.train()
    with frozen(classifier), eval_mode(classifier), rt.autocast():
        loss = true_class_probability(classifier, perturber(x), y)
    apply(optimizer, loss)
    return {"gen_loss": loss.detach()}


def latent_diversity(deltas: torch.Tensor, z: torch.Tensor, copies: int, eps: float) -> torch.Tensor:
    """Diversity of perturbations made from different latent codes of the same images.

    ``deltas`` and ``z`` hold ``copies`` consecutive blocks, one per code, of the same images.
    For each image and each pair of neighbouring codes: the mean absolute difference of the two
    perturbations (in units of eps) divided by the mean absolute difference of the codes
    (the mode-seeking ratio of Mao et al., 2019, used by Jang et al.); averaged. Zero with one
    copy.
    """
    if copies < 2:
        return deltas.new_zeros(())
    d = deltas.flatten(1).view(copies, -1, deltas[0].numel()) / to_model_scale(eps)
    c = z.view(copies, -1, z.shape[-1])
    nxt = torch.roll(torch.arange(copies, device=z.device), -1)
    num = (d - d[nxt]).abs().mean(dim=2)
    den = (c - c[nxt]).abs().mean(dim=2)
    pairs = num / (den + 1e-8)
    return pairs[: copies if copies > 2 else 1].mean()


def attacker_step(
    attacker: nn.Module,
    classifier: nn.Module,
    optimizer: torch.optim.Optimizer,
    rt: Runtime,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    copies: int,
    diversity_weight: float,
    random_start: bool = True,
    max_grad_norm: float = 1.0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One update of a learned attacker against a frozen classifier (eval mode).

    The batch is attacked ``copies`` times with independent latent codes. The attacker
    maximises the classifier's cross-entropy averaged over all of its recursive steps (Jang
    et al.'s loss summed over steps, up to the constant 1/steps) plus ``diversity_weight``
    times :func:`latent_diversity` of every step. The cross-entropy's gradient with respect to
    each step's adversarial image is the input gradient the attacker sees at the next step, so
    one classifier forward and backward per step serves both (the cost of a PGD step); the
    classifier's weights get no gradient. Returns detached metrics and the final adversarial
    images (``copies`` blocks of the batch), on which the classifier then trains:
    ``gen_loss`` (the classifier's mean probability of the true class on them, the quantity
    the ratio schedules hold under their target, as for the image generator), ``gen_ce``
    (cross-entropy averaged over steps), ``gen_diversity`` and ``gen_acc``.
    """
    xs = x.repeat(copies, *([1] * (x.dim() - 1)))
    ys = y.repeat(copies)
    z = attacker.sample_latent(len(ys), x.device)
    with rt.autocast():
        trace = learned_attack_steps(attacker, classifier, xs, ys, z, track=True, random_start=random_start)
    steps = len(trace.adv)
    # d(mean CE)/d(attacker) = sum over examples of grad_x CE . d adv / d attacker, per step.
    surrogate = sum((adv.float() * g.float()).sum() for adv, g in zip(trace.adv, trace.grads)) / (
        len(ys) * steps
    )
    diversity = (
        sum(latent_diversity(adv.float() - xs.float(), z, copies, attacker.eps) for adv in trace.adv) / steps
    )
    loss = -surrogate - diversity_weight * diversity
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(attacker.parameters(), max_grad_norm)
    optimizer.step()
    final_losses = trace.losses[-1]
    out = {
        "gen_loss": torch.exp(-final_losses).mean(),
        "gen_ce": torch.stack([ls.mean() for ls in trace.losses]).mean(),
        "gen_diversity": diversity.detach(),
        "gen_acc": trace.correct.float().mean(),
    }
    return out, trace.final()


def run_steps(batches, step) -> dict[str, torch.Tensor]:
    """Apply ``step(x, y) -> metric tensors`` to every batch; the mean of each metric."""
    meter = Meter()
    for x, y in batches:
        meter.update(step(x, y))
    return meter.means()
