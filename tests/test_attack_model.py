"""The judge's model (orchestrator.attack_model.Answers): the same numbers as the classifier,
computed once, and the same verdicts from ART's attacks as ART's plain estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from orchestrator import robustness
from orchestrator.attack_model import Answers, UnitScale
from trainables.models import make_classifier


def _classifier(seed: int = 0, width: int = 8, architecture: str = "classic") -> nn.Module:
    torch.manual_seed(seed)
    model = make_classifier(architecture, 1, 10, width=width)
    for m in model.modules():  # running statistics that are not the identity: folding matters
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_answers_equal_the_classifier_and_compute_an_image_once():
    model, x = _classifier(), torch.rand(12, 1, 32, 32)
    answers = Answers(model)
    with torch.no_grad():
        expected = UnitScale(model)(x)
        assert torch.allclose(answers(x), expected, atol=1e-5)
        assert answers.computed == {"grad": 0, "no_grad": 12, "window": 0}
        assert torch.allclose(answers(x[[3, 1, 3]]), expected[[3, 1, 3]], atol=1e-5)
    assert answers.computed["no_grad"] == 12


WINDOWS = [(0, 5, 0, 5), (10, 17, 20, 27), (27, 32, 26, 32), (3, 4, 30, 32), (0, 32, 0, 3)]


@pytest.mark.parametrize("architecture", ["classic", "smallcnn"])
@pytest.mark.parametrize("window", WINDOWS)
def test_an_image_changed_in_a_window_is_computed_there_only_and_equals_a_full_pass(window, architecture):
    model, x = _classifier(1, architecture=architecture), torch.rand(6, 1, 32, 32)
    answers, full = Answers(model), UnitScale(model)
    r0, r1, c0, c1 = window
    changed = x.clone()
    changed[:, :, r0:r1, c0:c1] = torch.rand(6, 1, r1 - r0, c1 - c0)
    with torch.no_grad():
        answers(x)  # the images at the same places in the previous query
        got = answers(changed)
        assert torch.allclose(got, full(changed), atol=1e-5)
        assert not torch.allclose(got, full(x), atol=1e-3)
    assert answers.computed["window"] + answers.computed["no_grad"] == 12
    if architecture == "classic":  # a 2x2 pool after two convs: every window is worth computing in part
        assert answers.computed["window"] == 6


def test_a_large_change_or_a_model_that_is_no_chain_is_computed_in_full():
    model, x = _classifier(2), torch.rand(4, 1, 32, 32)
    answers = Answers(model)
    with torch.no_grad():
        answers(x)
        answers(x + 0.01)  # every pixel changed
    assert answers.computed == {"grad": 0, "no_grad": 8, "window": 0}

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.head = nn.Linear(32 * 32, 10)

        def forward(self, x):
            return self.head((x + self.conv(x)).flatten(1))

    residual = Residual().eval()
    answers = Answers(residual)
    changed = x.clone()
    changed[:, :, :3, :3] = 0.5
    with torch.no_grad():
        answers(x)
        assert torch.allclose(answers(changed), UnitScale(residual)(changed), atol=1e-5)
    assert answers.computed["window"] == 0


def test_a_gradient_at_the_points_just_scored_reuses_that_forward_pass():
    model, x, y = _classifier(3), torch.rand(5, 1, 32, 32), torch.randint(0, 10, (5,))
    answers, full = Answers(model), UnitScale(model)

    def gradient(net):
        xg = x.clone().requires_grad_(True)
        nn.functional.cross_entropy(net(xg), y).backward()
        return xg.grad

    scored = nn.functional.cross_entropy(answers(x), y, reduction="none")  # APGD's compute_loss
    assert torch.allclose(scored, nn.functional.cross_entropy(full(x), y, reduction="none"), atol=1e-5)
    assert torch.allclose(gradient(answers), gradient(full), atol=1e-6)
    assert answers.computed["grad"] == 5  # the gradient came from the scoring pass
    gradient(answers)  # nothing held any more: computed afresh
    assert answers.computed["grad"] == 10


@pytest.mark.train
@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-t", "square"])
def test_art_gives_the_same_verdicts_through_answers_as_through_its_plain_estimator(attack):
    pytest.importorskip("art")
    model = _classifier(4, width=4)
    x, y = torch.rand(10, 1, 32, 32) * 2 - 1, torch.randint(0, 10, (10,))
    runs = [
        robustness.run_attack(attack, model, x, y, eps=0.05, targets=2, square_queries=60, remember=r)
        for r in (True, False)
    ]
    assert np.array_equal(runs[0].correct, runs[1].correct)
    assert np.array_equal(runs[0].broken_by, runs[1].broken_by)
