"""Square attack (Andriushchenko et al., ECCV 2020), L-infinity, in the project's own torch
code: the gradient-free part of a trial's final test (``test/apgd_square_acc``).

A score-based random search: start from vertical stripes of +-eps, then per query replace one
random square window of the perturbation, per image, with +-eps per channel, and keep the
change when it lowers the margin loss (true logit minus the best other one). The window's area
shrinks on the paper's schedule (``p_init`` halved at 0.1%, 0.5%, 2%, 5%, 10%, 20%, 40%, 60%
and 80% of the query budget). It needs no gradient, so a classifier that masks its gradients
cannot hide from it; AutoAttack runs it for that reason (5,000 queries). The final numbers of
``orchestrator evaluate`` come from ART's implementation (``orchestrator.robustness``).

As in :mod:`trainables.attacks`, ``eps`` is on the [0, 1] pixel scale, inputs live in [-1, 1],
the attack never modifies its input and runs the model in eval mode. The loop keeps every
tensor on the input's device; it drops the images already fooled every ``compact_every``
queries (one host sync each time), so the queries go to the images still standing.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from trainables.attacks import check_eps, eval_mode
from trainables.data import PIXEL_RANGE, to_model_scale

#: Fractions of the query budget after which the window's area halves (the paper's schedule,
#: as in its reference code and in ART's ``SquareAttack``).
P_HALVINGS = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)


def window_fraction(p_init: float, query: int, queries: int) -> float:
    """Share of an image's pixels the window of ``query`` (of ``queries``) covers."""
    return p_init / 2 ** bisect.bisect_left(P_HALVINGS, query / max(queries, 1))


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """True logit minus the best other one, per example (> 0: classified correctly)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


@torch.no_grad()
def _signs(shape: tuple[int, ...], e: float, like: torch.Tensor, generator) -> torch.Tensor:
    draw = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * draw - 1).to(like.dtype) * e


def _candidate(x0: torch.Tensor, best: torch.Tensor, side: int, e: float, generator) -> torch.Tensor:
    """``best`` with one ``side`` x ``side`` square per image set to new signs at a random place
    (all channels); a draw that leaves the square as it was takes the other signs."""
    m, c, h, w = best.shape
    lo, hi = PIXEL_RANGE
    rows = torch.arange(h, device=best.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=best.device).view(1, 1, 1, w)
    top = torch.randint(0, h - side, (m, 1, 1, 1), generator=generator, device=best.device)
    left = torch.randint(0, w - side, (m, 1, 1, 1), generator=generator, device=best.device)
    window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    new = _signs((m, c, 1, 1), e, x0, generator)
    candidate = (x0 + torch.where(window, new, best - x0)).clamp(lo, hi)
    same = ((candidate - best).abs().amax(dim=(1, 2, 3)) < 1e-7).view(-1, 1, 1, 1)
    other = (x0 + torch.where(window, -new, best - x0)).clamp(lo, hi)
    return torch.where(same, other, candidate)


def square_robust(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    queries: int = 1000,
    p_init: float = 0.8,
    generator: torch.Generator | None = None,
    compact_every: int = 50,
) -> torch.Tensor:
    """Which examples resist ``queries`` model evaluations of L-infinity Square at ``eps``
    (an example the model gets wrong unattacked does not resist)."""
    check_eps(eps)
    if queries < 1:
        raise ValueError(f"queries={queries} must be >= 1")
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init={p_init} must be in (0, 1]")
    n, c, h, w = x.shape
    lo, hi = PIXEL_RANGE
    e = to_model_scale(eps)
    x0 = x.detach()
    with eval_mode(model):
        clean = model(x0).float()
        resist = margin(clean, y) > 0
        if eps == 0:
            return resist
        active = resist.nonzero().squeeze(1)  # positions of the images still attacked
        x0, y = x0[active], y[active]
        n = len(active)
        if not n:
            return resist
        best = (x0 + _signs((n, c, 1, w), e, x0, generator)).clamp(lo, hi)  # vertical stripes
        loss = margin(model(best).float(), y)
        for query in range(1, queries):
            if query % compact_every == 0:
                standing = loss > 0
                if not bool(standing.all()):  # one host sync per compact_every queries
                    resist[active[~standing]] = False
                    keep = standing.nonzero().squeeze(1)
                    active, x0, y, best, loss = active[keep], x0[keep], y[keep], best[keep], loss[keep]
                    if not active.numel():
                        return resist
            side = round(math.sqrt(window_fraction(p_init, query, queries) * h * w))
            candidate = _candidate(x0, best, min(max(side, 1), h - 1), e, generator)
            loss_new = margin(model(candidate).float(), y)
            better = (loss_new < loss) & (loss > 0)
            best = torch.where(better.view(-1, 1, 1, 1), candidate, best)
            loss = torch.where(better, loss_new, loss)
        resist[active] &= loss > 0
    return resist
