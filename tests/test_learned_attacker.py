"""The learned attacker (generator=gradient): properties on tiny synthetic tensors."""

import pytest
import torch
from torch import nn

from tests.conftest import synthetic
from trainables.adaptive_ratio import AdaptiveRatioConfig
from trainables.attacks import learned_attack, learned_attack_steps
from trainables.config import ConfigError
from trainables.data import load_data, to_model_scale
from trainables.evaluation import accuracy
from trainables.models import GradientAttacker
from trainables.runtime import Runtime
from trainables.steps import attacker_step, classifier_step, latent_diversity

pytestmark = pytest.mark.train


RT = Runtime(torch.device("cpu"), None, False)


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", torch.device("cpu"))


def _classifier(data, steps=150, seed=0):
    """A small classifier that learns the synthetic prototypes (BatchNorm included, so that
    train/eval mode matters)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Linear(512, 10),
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(data.train), (64,), generator=g)
        classifier_step(model, opt, RT, [("clean", data.train.x[idx], data.train.y[idx], 1.0)])
    return model.eval()


@pytest.fixture(scope="module")
def classifier(data):
    return _classifier(data)


def test_every_step_stays_in_the_eps_ball_and_the_pixel_range(data, classifier):
    torch.manual_seed(0)
    eps = 0.1
    attacker = GradientAttacker(1, eps=eps, steps=4, step_size=0.5, gradient_skip=False)
    with torch.no_grad():  # make its steps large, so that projection is exercised
        attacker.out.bias.fill_(3.0)
    x, y = data.val.x[:32], data.val.y[:32]
    before = x.clone()
    trace = learned_attack_steps(attacker, classifier, x, y, attacker.sample_latent(32, "cpu"), track=True)
    assert len(trace.adv) == 4
    e = to_model_scale(eps)
    previous = x
    for adv in trace.adv:
        assert adv.requires_grad, "tracked: the attacker's graph is kept"
        assert (adv - x).abs().max() <= e + 1e-6
        assert adv.min() >= -1 and adv.max() <= 1
        assert (adv - previous).abs().max() <= e * 0.5 * 2 + 1e-6  # one step: at most step_size*eps (+ start)
        previous = adv.detach()
    assert (trace.adv[-1] - x).abs().max() > 0.9 * e, "the steps reach the boundary of the ball"
    assert torch.equal(x, before), "the input is never modified"


def test_weights_get_no_gradient_across_the_two_updates(data, classifier):
    classifier = _classifier(data, steps=20)
    classifier.zero_grad(set_to_none=True)  # gradients of its own training are not the attacker's
    attacker = GradientAttacker(1, eps=0.3, steps=2, step_size=0.5)
    cls_before = {k: v.clone() for k, v in classifier.state_dict().items()}
    gen_opt = torch.optim.Adam(attacker.parameters(), 1e-3)
    x, y = data.train.x[:16], data.train.y[:16]
    classifier.train()  # the attack must switch it to eval mode and back
    metrics, adv = attacker_step(attacker, classifier, gen_opt, RT, x, y, copies=2, diversity_weight=1.0)
    assert classifier.training, "the classifier's mode is restored"
    assert all(p.grad is None for p in classifier.parameters()), "no gradient reaches the classifier"
    for k, v in classifier.state_dict().items():
        assert torch.equal(v, cls_before[k]), f"{k} changed (BatchNorm statistics included)"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in attacker.parameters())
    assert adv.shape == (32, 1, 32, 32) and not adv.requires_grad
    assert set(metrics) >= {"gen_loss", "gen_ce", "gen_diversity", "gen_acc"}

    gen_opt.zero_grad(set_to_none=True)
    attacker_before = {k: v.clone() for k, v in attacker.state_dict().items()}
    cls_opt = torch.optim.Adam(classifier.parameters(), 1e-3)
    classifier_step(classifier, cls_opt, RT, [("clean", x, y, 0.2), ("adv", adv, y.repeat(2), 0.8)])
    assert all(p.grad is None for p in attacker.parameters()), (
        "the classifier's update leaves the attacker alone"
    )
    assert all(torch.equal(v, attacker_before[k]) for k, v in attacker.state_dict().items())


def test_diversity_term_separates_two_latent_codes(data, classifier):
    """Without random starts the two copies differ only through their latent codes."""
    x, y = data.train.x[:32], data.train.y[:32]
    spread = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        attacker = GradientAttacker(1, eps=0.3, steps=2, step_size=0.5, gradient_skip=False)
        opt = torch.optim.Adam(attacker.parameters(), 3e-3)
        for _ in range(25):
            metrics, _ = attacker_step(
                attacker, classifier, opt, RT, x, y, copies=2, diversity_weight=weight, random_start=False
            )
        spread[weight] = float(metrics["gen_diversity"])
    assert spread[5.0] > 1.5 * spread[0.0], spread


def test_latent_diversity_is_zero_for_one_code_and_scale_free():
    deltas = torch.randn(8, 1, 4, 4)
    z = torch.randn(8, 3)
    assert latent_diversity(deltas, z, 1, 0.3) == 0
    same = latent_diversity(torch.cat([deltas[:4], deltas[:4]]), z, 2, 0.3)
    assert same == 0, "identical perturbations for two codes have no diversity"
    assert latent_diversity(2 * deltas, z, 2, 0.6) == pytest.approx(
        float(latent_diversity(deltas, z, 2, 0.3))
    )


def test_trained_attacker_beats_uniform_noise_of_the_same_eps(data, classifier):
    torch.manual_seed(0)
    eps = 0.15
    x, y = data.val.x[:200], data.val.y[:200]
    attacker = GradientAttacker(1, eps=eps, steps=3, step_size=0.5, gradient_skip=False)
    opt = torch.optim.Adam(attacker.parameters(), 3e-3)
    for i in range(40):
        idx = slice(32 * (i % 10), 32 * (i % 10 + 1))
        attacker_step(
            attacker, classifier, opt, RT, data.train.x[idx], data.train.y[idx], copies=1, diversity_weight=0
        )
    g = torch.Generator().manual_seed(1)
    noise = (x + to_model_scale(eps) * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(-1, 1)
    clean = float(accuracy(classifier, x, y))
    noisy = float(accuracy(classifier, noise, y))
    attacked = float(accuracy(classifier, learned_attack(attacker, classifier, x, y, generator=g), y))
    assert clean > 0.8, "the tiny classifier learned the task"
    assert attacked < noisy - 0.2, (clean, noisy, attacked)


@pytest.mark.parametrize(
    "values,needle",
    [
        ({"gen_steps": 0}, "gen_steps=0 is below its minimum 1"),
        ({"gen_steps": 11}, "gen_steps=11 is above its maximum 10"),
        ({"gen_step_size": 0}, "gen_step_size=0.0 is below its minimum"),
        ({"gen_step_size": 1.5}, "gen_step_size=1.5 is above its maximum 1.0"),
        ({"diversity_weight": -1}, "diversity_weight=-1.0 is below its minimum 0.0"),
        ({"adv_copies": 5}, "adv_copies=5 is above its maximum 4"),
        ({"generator": "gradient", "diversity_weight": 1.0}, "needs adv_copies >= 2"),
        ({"generator": "pixel"}, "generator='pixel' is not one of image, gradient"),
    ],
)
def test_config_rejects_bad_attacker_settings_in_one_line(values, needle):
    with pytest.raises(ConfigError) as info:
        AdaptiveRatioConfig.from_dict(synthetic(**values))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_model_rejects_bad_arguments():
    for kwargs in ({"eps": 0}, {"steps": 0}, {"steps": 11}, {"step_size": 0}, {"step_size": 1.2}):
        with pytest.raises(ValueError):
            GradientAttacker(1, **kwargs)
