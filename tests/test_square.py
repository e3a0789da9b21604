import pytest
import torch
from torch import nn

from trainables.apgd import apgd_robust
from trainables.evaluation import EvalSpec, attack_steps, evaluate
from trainables.square import P_HALVINGS, margin, square_robust, window_fraction

pytestmark = pytest.mark.train


class Linear(nn.Module):
    """A linear classifier on 1x8x8 images: the true class's margin falls by exactly
    eps * |w_y - w_j|_1 at the optimal L-infinity corner, so Square's answer can be checked."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(10, 64, generator=torch.Generator().manual_seed(seed)))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class Staircase(Linear):
    """The same classifier behind a staircase on its input: the gradient is zero almost
    everywhere (gradient masking), the decision is not robust."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((torch.round(x * 4) / 4).flatten(1))


def _images(model: nn.Module, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    with torch.no_grad():
        y = model(x).argmax(1)  # every image correct unattacked
    return x, y


def test_window_shrinks_on_the_papers_schedule():
    assert window_fraction(0.8, 0, 1000) == 0.8
    assert window_fraction(0.8, 1, 1000) == 0.8  # 0.1% of the budget: not yet halved
    assert window_fraction(0.8, 2, 1000) == 0.4
    assert window_fraction(0.8, 999, 1000) == pytest.approx(0.8 / 2 ** len(P_HALVINGS))
    assert window_fraction(0.8, 250, 5000) == window_fraction(0.8, 50, 1000)  # scales with the budget


def test_margin_is_true_logit_minus_best_other():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert margin(logits, torch.tensor([0, 0])).tolist() == [1.0, -5.0]


def test_square_breaks_a_linear_classifier_within_its_ball_and_no_further():
    model = Linear().eval()
    x, y = _images(model)
    w = model.fc.weight
    with torch.no_grad():
        logits = model(x)
        # The smallest eps (model units) that flips each image: margin over ||w_y - w_j||_1.
        needed = (logits.gather(1, y[:, None]) - logits) / ((w[y][:, None] - w[None]).abs().sum(-1) + 1e-12)
        needed = needed.scatter(1, y[:, None], float("inf")).amin(1) / 2  # back to the [0, 1] scale
    eps = float(needed.median())
    x_before = x.clone()
    resist = square_robust(model, x, y, eps, queries=300, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x_before)  # the input is not modified
    # An image no point of the ball breaks always resists; Square breaks most of the others.
    assert resist[needed > eps].all()
    assert (~resist[needed <= eps]).float().mean() > 0.7


def test_square_is_deterministic_and_zero_eps_is_clean_accuracy():
    model = Linear().eval()
    x, y = _images(model)
    y = y.clone()
    y[:5] = (y[:5] + 1) % 10  # five images wrong unattacked
    runs = [
        square_robust(model, x, y, 0.05, queries=50, generator=torch.Generator().manual_seed(3)) for _ in "ab"
    ]
    assert torch.equal(runs[0], runs[1])
    assert not runs[0][:5].any()
    assert square_robust(model, x, y, 0.0, queries=50).tolist() == [False] * 5 + [True] * (len(y) - 5)
    with pytest.raises(ValueError, match="queries"):
        square_robust(model, x, y, 0.1, queries=0)


def test_square_sees_through_gradient_masking_that_fools_apgd():
    model = Staircase().eval()
    x, y = _images(model)
    apgd = apgd_robust(model, x, y, 0.05, steps=10, generator=torch.Generator().manual_seed(0))
    square = square_robust(model, x, y, 0.05, queries=200, generator=torch.Generator().manual_seed(0))
    # No gradient: APGD's steps never move, only its random start breaks a few images (61%).
    assert apgd.float().mean() > 0.5
    assert square.float().mean() < apgd.float().mean() - 0.4  # 6%


def test_evaluate_reports_the_worst_of_apgd_and_square_per_image():
    from trainables.data import Split

    model = Staircase().eval()
    x, y = _images(model)
    spec = EvalSpec(
        fgsm_eps=(), pgd_eps=0.05, pgd_steps=0, noise=False, apgd_steps=5, square_queries=100, robust_n=0
    )
    out = evaluate(model, Split(x, y), spec, "test")
    assert out["test/apgd_square_acc"] <= out["test/apgd_acc"] - 0.3
    without = evaluate(model, Split(x, y), EvalSpec(apgd_steps=5, noise=False), "test")
    assert "test/apgd_square_acc" not in without
    # Square's queries count in the cost estimate a trial's deadline uses.
    assert attack_steps(spec, 1.0) > attack_steps(EvalSpec(fgsm_eps=(), pgd_steps=0, apgd_steps=5), 1.0)
