import pytest
import torch

from trainables.corruptions import (
    NOISE_LEVELS,
    corrupt,
    gaussian_noise,
    periodic_noise,
    salt_and_pepper,
)


@pytest.fixture()
def x():
    return torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("kind", list(NOISE_LEVELS))
@pytest.mark.parametrize("level", ["low", "medium", "high"])
def test_corruption_properties(x, kind, level):
    before = x.clone()
    out = corrupt(x, kind, level, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, before)
    assert out.shape == x.shape
    assert out.min() >= -1 and out.max() <= 1
    assert not torch.equal(out, x)


@pytest.mark.parametrize("kind", list(NOISE_LEVELS))
def test_levels_are_ordered(x, kind):
    distances = [
        (corrupt(x, kind, level, generator=torch.Generator().manual_seed(1)) - x).abs().mean().item()
        for level in ("low", "medium", "high")
    ]
    assert distances == sorted(distances)


def test_salt_and_pepper_fraction():
    x = torch.zeros(4, 1, 64, 64)
    out = salt_and_pepper(x, 0.2, generator=torch.Generator().manual_seed(0))
    changed = (out != 0).float().mean().item()
    assert abs(changed - 0.2) < 0.02
    assert set(out.unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_gaussian_sigma_is_on_unit_scale():
    x = torch.zeros(16, 1, 32, 32)
    out = gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(0))
    assert abs(out.std().item() - 0.2) < 0.01  # 0.1 of the [0,1] range is 0.2 in [-1,1] units


def test_periodic_amplitude_and_determinism():
    x = torch.zeros(2, 1, 32, 32)
    out = periodic_noise(x, 0.1)
    assert out.abs().max() <= 0.2 + 1e-6
    assert out.abs().max() > 0.15
    assert torch.equal(out, periodic_noise(x, 0.1))


def test_unknown_noise_raises(x):
    with pytest.raises(ValueError):
        corrupt(x, "speckle", "low")
    with pytest.raises(ValueError):
        corrupt(x, "gaussian", "extreme")
