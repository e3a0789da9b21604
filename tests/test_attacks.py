import pytest
import torch
import torch.nn.functional as F

from trainables.attacks import adversarial_examples, eval_mode, fgsm, pgd
from trainables.models import ClassicClassifier


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = ClassicClassifier(1, 10)
    x = torch.rand(16, 1, 32, 32) * 2 - 1
    y = torch.randint(0, 10, (16,))
    # A few steps of training so BatchNorm has running statistics and gradients are informative.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.train()
    return model, x, y


def _loss(model, x, y):
    with torch.no_grad(), eval_mode(model):
        return F.cross_entropy(model(x), y).item()


ATTACKS = {
    "fgsm": lambda m, x, y, e: fgsm(m, x, y, e),
    "pgd": lambda m, x, y, e: pgd(m, x, y, e, steps=5, step_size=e / 4),
    "pgd_restarts": lambda m, x, y, e: pgd(m, x, y, e, steps=3, step_size=e / 2, restarts=3),
}


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_attack_properties(setup, name, eps):
    model, x, y = setup
    x_before = x.clone()
    bn = model.features[1]
    running = bn.running_mean.clone()
    adv = ATTACKS[name](model, x, y, eps)
    assert torch.equal(x, x_before), "the input must not be modified"
    assert (adv - x).abs().max() <= 2 * eps + 1e-5, "|delta|_inf <= eps (on the [0,1] scale)"
    assert adv.min() >= -1 and adv.max() <= 1, "output stays in the valid range"
    assert _loss(model, adv, y) >= _loss(model, x, y) - 1e-4, "the loss does not go down"
    assert torch.equal(bn.running_mean, running), "BatchNorm statistics untouched (eval mode)"
    assert model.training, "the model's mode is restored"
    assert not adv.requires_grad


def test_pgd_beats_fgsm_at_same_eps(setup):
    model, x, y = setup
    assert (
        _loss(model, pgd(model, x, y, 0.2, steps=10, step_size=0.05), y)
        >= _loss(model, fgsm(model, x, y, 0.2), y) - 1e-3
    )


def test_zero_eps_is_identity(setup):
    model, x, y = setup
    assert torch.equal(fgsm(model, x, y, 0.0), x)
    assert torch.equal(pgd(model, x, y, 0.0), x)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: fgsm(m, x, y, -0.1),
        lambda m, x, y: fgsm(m, x, y, 1.5),
        lambda m, x, y: pgd(m, x, y, 0.3, steps=0),
        lambda m, x, y: pgd(m, x, y, 0.3, restarts=0),
        lambda m, x, y: pgd(m, x, y, 0.3, step_size=0),
        lambda m, x, y: adversarial_examples(m, x, y, "cw", 0.3),
    ],
)
def test_bad_arguments_raise(setup, call):
    model, x, y = setup
    with pytest.raises(ValueError):
        call(model, x, y)


def test_pgd_is_deterministic_with_generator(setup):
    model, x, y = setup
    a = pgd(model, x, y, 0.3, steps=2, generator=torch.Generator().manual_seed(3))
    b = pgd(model, x, y, 0.3, steps=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
