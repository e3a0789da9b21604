import pytest
import torch
import torch.nn.functional as F

from trainables.apgd import _apgd_checkpoints, apgd, apgd_robust, dlr_loss, dlr_targeted_loss
from trainables.attacks import adversarial_examples, eval_mode, fgsm, pgd
from trainables.models import ClassicClassifier

pytestmark = pytest.mark.train


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
    "apgd_ce": lambda m, x, y, e: apgd(m, x, y, e, steps=8)[0],
    "apgd_dlr": lambda m, x, y, e: apgd(m, x, y, e, steps=8, loss="dlr")[0],
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


def test_apgd_step_halving_checkpoints_follow_croce_and_hein():
    assert _apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert _apgd_checkpoints(1) == [1]


def test_dlr_loss_ignores_the_logits_scale():
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(dlr_loss(logits, y), dlr_loss(5 * logits, y), atol=1e-5)
    right = torch.tensor([[5.0, 1.0, 0.0, -1.0]])
    assert dlr_loss(right, torch.tensor([0])).item() < 0 < dlr_loss(right, torch.tensor([3])).item()


def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_steps(setup):
    model, x, y = setup
    with torch.no_grad(), eval_mode(model):
        y = model(x).argmax(1)  # every image starts correctly classified
    gen = torch.Generator().manual_seed(0)
    adv, correct = apgd(model, x, y, 0.05, steps=20, generator=gen)
    with torch.no_grad(), eval_mode(model):
        assert torch.equal(correct, model(adv).argmax(1) == y), "correct says whether adv fools the model"
        pgd_correct = model(pgd(model, x, y, 0.05, steps=20, step_size=0.005, generator=gen)).argmax(1) == y
    assert correct.sum() <= pgd_correct.sum() and correct.sum() < len(y)
    both = apgd_robust(model, x, y, 0.05, steps=20, generator=gen)
    assert (both <= correct).all(), "DLR only runs on what CE left, so it can only lower accuracy"


def test_targeted_dlr_loss_rises_as_the_target_overtakes_the_true_class():
    logits = torch.tensor([[4.0, 1.0, 0.0, -1.0, -2.0]])
    y, near, far = torch.tensor([0]), torch.tensor([1]), torch.tensor([4])
    assert dlr_targeted_loss(logits, y, near).item() > dlr_targeted_loss(logits, y, far).item()
    overtaken = torch.tensor([[1.0, 4.0, 0.0, -1.0, -2.0]])
    assert dlr_targeted_loss(overtaken, y, near).item() > 0 > dlr_targeted_loss(logits, y, near).item()
    assert torch.allclose(dlr_targeted_loss(3 * logits, y, far), dlr_targeted_loss(logits, y, far))


def test_apgd_t_moves_images_to_their_target_and_adds_to_apgd_ce(setup):
    model, x, y = setup
    with torch.no_grad(), eval_mode(model):
        y = model(x).argmax(1)
        second = model(x).argsort(1, descending=True)[:, 1]
    gen = torch.Generator().manual_seed(0)
    adv, correct = apgd(model, x, y, 0.1, steps=20, loss="dlr-t", target=second, generator=gen)
    with torch.no_grad(), eval_mode(model):
        pred = model(adv).argmax(1)
    assert torch.equal(correct, pred == y) and not correct.all()
    assert (pred[~correct] == second[~correct]).float().mean() > 0.5, "it goes where it is sent"
    ce = apgd_robust(model, x, y, 0.03, steps=10, targets=0, generator=torch.Generator().manual_seed(0))
    _, ce_only = apgd(model, x, y, 0.03, steps=10, generator=torch.Generator().manual_seed(0))
    t9 = apgd_robust(model, x, y, 0.03, steps=10, targets=9, generator=torch.Generator().manual_seed(0))
    assert (t9 <= ce_only).all() and (ce <= ce_only).all()
    with pytest.raises(ValueError, match="target"):
        apgd(model, x, y, 0.1, steps=2, loss="dlr-t")
