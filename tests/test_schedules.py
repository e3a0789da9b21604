import pytest

from trainables.schedules import adaptive_k, stepped_k, validate_steps


def test_stepped_schedule_follows_steps():
    steps = ((1, 6), (4, 8), (7, 12))
    assert [stepped_k(c, steps) for c in range(1, 10)] == [6, 6, 6, 8, 8, 8, 12, 12, 12]


def test_stepped_schedule_needs_steps():
    with pytest.raises(ValueError):
        stepped_k(1, ())
    with pytest.raises(ValueError):
        validate_steps(((2, 6),))
    with pytest.raises(ValueError):
        validate_steps(((1, 6), (1, 8)))


def test_adaptive_raises_k_while_generator_loss_above_target():
    k, trace = 2, []
    for _ in range(6):
        k = adaptive_k(k, gen_loss=0.9, target=0.6, factor=1.5, k_min=1, k_max=10)
        trace.append(k)
    assert trace == [3, 5, 8, 10, 10, 10]


def test_adaptive_lowers_k_under_target_but_not_below_min():
    k, trace = 10, []
    for _ in range(8):
        k = adaptive_k(k, gen_loss=0.3, target=0.6, factor=2.0, k_min=2, k_max=100)
        trace.append(k)
    assert trace == [5, 2, 2, 2, 2, 2, 2, 2]


def test_adaptive_holds_loss_around_target():
    # A toy generator whose loss falls with more steps: k settles where loss ~ target.
    k = 1
    for _ in range(40):
        loss = 1.0 / (1 + 0.1 * k)
        k = adaptive_k(k, gen_loss=loss, target=0.6, factor=1.25, k_min=1, k_max=1000)
    assert 4 <= k <= 10  # loss(k) crosses 0.6 at k ~ 6.7


def test_adaptive_factor_must_grow():
    with pytest.raises(ValueError):
        adaptive_k(2, 0.9, 0.6, factor=1.0, k_min=1, k_max=10)
