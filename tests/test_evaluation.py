import math

import pytest
import torch

from trainables.data import Split
from trainables.evaluation import EvalSpec, evaluate, feature_stats, frechet_distance, metric_keys
from trainables.models import ClassicClassifier


@pytest.fixture()
def split():
    g = torch.Generator().manual_seed(0)
    return Split(torch.rand(60, 1, 32, 32, generator=g) * 2 - 1, torch.randint(0, 10, (60,), generator=g))


def test_evaluate_reports_every_key_in_range(split):
    spec = EvalSpec(pgd_steps=2, robust_n=20, batch_size=16)
    model = ClassicClassifier(1, 10)
    model.train()
    out = evaluate(model, split, spec, "val")
    assert list(out) == metric_keys(spec, "val")
    assert "val/fgsm_acc/eps0.3" in out and "val/pgd_acc" in out
    assert "val/noise_acc/salt_pepper/high" in out
    for key, value in out.items():
        assert math.isfinite(value)
        if "acc" in key:
            assert 0.0 <= value <= 1.0
    assert model.training, "evaluation restores the model's mode"


def test_apgd_accuracy_is_reported_when_asked_and_never_above_clean(split):
    model = ClassicClassifier(1, 10)
    without = evaluate(model, split, EvalSpec(pgd_steps=2, robust_n=20, noise=False), "val")
    assert "val/apgd_acc" not in without
    spec = EvalSpec(pgd_steps=2, apgd_steps=4, robust_n=20, clean_n=20, noise=False)
    out = evaluate(model, split, spec, "val")
    assert list(out) == metric_keys(spec, "val") and out.keys() - without.keys() == {"val/apgd_acc"}
    clean_on_robust_subset = evaluate(
        model, split.subset(20, seed=1), EvalSpec(pgd_steps=0, noise=False), "v"
    )
    assert 0.0 <= out["val/apgd_acc"] <= clean_on_robust_subset["v/acc"]


def test_evaluate_is_deterministic(split):
    spec = EvalSpec(pgd_steps=2, robust_n=20)
    model = ClassicClassifier(1, 10)
    assert evaluate(model, split, spec, "val") == evaluate(model, split, spec, "val")


def test_perfect_model_has_clean_accuracy_one(split):
    class Oracle(torch.nn.Module):
        def __init__(self, labels_by_image):
            super().__init__()
            self.lookup = labels_by_image
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            # one-hot of the label of the nearest stored image, plus a differentiable term
            d = torch.cdist(x.flatten(1), split.x.flatten(1))
            return torch.nn.functional.one_hot(split.y[d.argmin(1)], 10).float() * 10 + self.w * x.mean()

    out = evaluate(Oracle(None), split, EvalSpec(pgd_steps=0, fgsm_eps=(), noise=False), "test")
    assert set(out) == {"test/acc", "test/loss"} and out["test/acc"] == 1.0
    assert 0 <= out["test/loss"] < 1e-3


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 4, generator=g)
    assert frechet_distance(feature_stats(a), feature_stats(a)) == pytest.approx(0.0, abs=1e-6)
    shifted = a + torch.tensor([1.0, 0, 0, 0])
    assert frechet_distance(feature_stats(a), feature_stats(shifted)) == pytest.approx(1.0, abs=1e-6)
    scaled = a * 2  # cov I vs 4I: tr(I + 4I - 2*2I) = 4 * 1 = 4 dims -> 4
    assert frechet_distance(feature_stats(a), feature_stats(scaled)) == pytest.approx(4.0, rel=0.1)


def test_the_test_split_gets_the_stronger_apgd_protocol_and_its_cost_is_estimated():
    from trainables.configs import TrialConfig
    from trainables.deadline import test_estimate
    from trainables.evaluation import attack_steps
    from trainables.metrics import label

    cfg = TrialConfig.from_dict({"apgd_steps": 10, "test_apgd_steps": 25, "test_apgd_targets": 9})
    val, test = cfg.eval_spec(), cfg.eval_spec(final=True)
    assert (val.apgd_steps, val.apgd_targets) == (10, 0) and (test.apgd_steps, test.apgd_targets) == (25, 9)
    assert label("test/apgd_acc", cfg.to_dict()) == "APGD-CE+T9-25 test accuracy (eps 0.3)"
    assert test.square_queries == 1000 and val.square_queries == 0  # Square: the test split only
    assert (
        label("test/apgd_square_acc", {"test_square_queries": 500})
        == "APGD-CE+T9-25 + Square-500 test accuracy (eps 0.3, worst per image)"
    )
    assert label("val/apgd_acc", {"apgd_targets": 3}) == "APGD-CE+T3-10 validation accuracy (eps 0.3)"
    # APGD-T runs only on what APGD-CE left: a classifier nothing resists costs little more.
    assert attack_steps(test, 0.0) < attack_steps(test, 0.6) < attack_steps(test, 1.0)
    ratio = attack_steps(test, 0.6) / attack_steps(val, 0.6)
    assert test_estimate(2.0, 500, 200, ratio) > 10 * test_estimate(2.0, 500, 200)


def test_apgd_t_in_evaluate_is_reported_under_the_same_key(split):
    model = ClassicClassifier(1, 10)
    spec = EvalSpec(pgd_steps=0, apgd_steps=3, apgd_targets=2, robust_n=20, clean_n=20, noise=False)
    out = evaluate(model, split, spec, "test")
    assert list(out) == metric_keys(spec, "test") and 0.0 <= out["test/apgd_acc"] <= 1.0
