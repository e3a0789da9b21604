"""Parameter importances follow the objective's direction and say when they are undefined."""

import numpy as np
import pytest

from orchestrator.importance import Undefined, importances

PARAMS = [
    {"name": "a", "kind": "float", "low": 0.0, "high": 1.0, "log": False, "choices": None},
    {"name": "b", "kind": "float", "low": 0.0, "high": 1.0, "log": False, "choices": None},
]


def _trials(n=120, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for a, b in rng.uniform(size=(n, 2)):
        # The best trials (highest value) are exactly those with a > 0.9; among the rest, b
        # alone decides, so the lowest values are those with the smallest b.
        rows.append({"config/a": a, "config/b": b, "val/acc": 10.0 if a > 0.9 else b})
    return rows


def test_a_maximised_objective_credits_the_parameter_that_makes_it_high():
    got = importances(_trials(), PARAMS, "val/acc", "max")
    assert got["a"] > 0.8 > got["b"]


def test_a_minimised_objective_credits_the_parameter_that_makes_it_low():
    got = importances(_trials(), PARAMS, "val/acc", "min")
    assert got["b"] > 0.8 > got["a"]


def test_equal_values_leave_importances_undefined():
    rows = [{**r, "val/acc": 0.0} for r in _trials(20)]
    with pytest.raises(Undefined, match="same val/acc"):
        importances(rows, PARAMS, "val/acc", "max")
