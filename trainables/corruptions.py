"""Image corruptions of seed 004 as pure functions: Gaussian, salt-and-pepper, periodic noise.

Amounts are on the [0, 1] pixel scale (a Gaussian sigma of 0.1 is a tenth of the full pixel
range); outputs are clipped to the valid range and inputs are never modified. Seed 004 names
three levels per type without numbers; :data:`NOISE_LEVELS` fixes them.
"""

from __future__ import annotations

import math

import torch

from trainables.data import PIXEL_RANGE, to_model_scale
from trainables.metrics import NOISE_AMOUNT, NOISE_LEVELS

__all__ = ["NOISE_AMOUNT", "NOISE_LEVELS", "corrupt", "gaussian_noise", "periodic_noise", "salt_and_pepper"]

# NOISE_LEVELS (level name -> amount on the [0, 1] pixel scale) and NOISE_AMOUNT (what the amount
# is) are declared with the metrics they name (trainables/metrics.py).
#: Periodic noise: cycles across the 32-pixel image and orientation of the stripes.
PERIODIC_FREQUENCY = 4.0
PERIODIC_ANGLE_DEG = 45.0


def gaussian_noise(
    x: torch.Tensor, sigma: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add i.i.d. N(0, sigma^2) noise; ``sigma`` on the [0, 1] pixel scale."""
    if sigma < 0:
        raise ValueError(f"sigma={sigma} must be >= 0")
    lo, hi = PIXEL_RANGE
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + to_model_scale(sigma) * noise).clamp(lo, hi)


def salt_and_pepper(
    x: torch.Tensor, amount: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Set a fraction ``amount`` of pixel locations to white or black (half each), all
    channels of a location together."""
    if not 0 <= amount <= 1:
        raise ValueError(f"amount={amount} must be in [0, 1]")
    lo, hi = PIXEL_RANGE
    n, _, h, w = x.shape
    u = torch.rand((n, 1, h, w), generator=generator, device=x.device)
    out = x.clone()
    out = torch.where(u < amount / 2, torch.full_like(x, lo), out)
    out = torch.where((u >= amount / 2) & (u < amount), torch.full_like(x, hi), out)
    return out


def periodic_noise(
    x: torch.Tensor,
    amplitude: float,
    *,
    frequency: float = PERIODIC_FREQUENCY,
    angle_deg: float = PERIODIC_ANGLE_DEG,
    phase: float = 0.0,
) -> torch.Tensor:
    """Add a sinusoidal stripe pattern ``amplitude * sin(2 pi f u / W + phase)`` along
    direction ``angle_deg``; ``amplitude`` on the [0, 1] pixel scale, ``frequency`` in
    cycles per image width."""
    if amplitude < 0:
        raise ValueError(f"amplitude={amplitude} must be >= 0")
    lo, hi = PIXEL_RANGE
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, w)
    theta = math.radians(angle_deg)
    u = cols * math.cos(theta) + rows * math.sin(theta)
    pattern = torch.sin(2 * math.pi * frequency * u / w + phase)
    return (x + to_model_scale(amplitude) * pattern).clamp(lo, hi)


def corrupt(
    x: torch.Tensor, kind: str, level: str, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply noise ``kind`` at a named ``level`` from :data:`NOISE_LEVELS`."""
    try:
        amount = NOISE_LEVELS[kind][level]
    except KeyError:
        raise ValueError(f"unknown noise {kind!r}/{level!r}; choose from {NOISE_LEVELS}") from None
    if kind == "gaussian":
        return gaussian_noise(x, amount, generator=generator)
    if kind == "salt_pepper":
        return salt_and_pepper(x, amount, generator=generator)
    return periodic_noise(x, amount)
