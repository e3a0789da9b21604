"""Priors: every space's known-good configurations fit it, and a search adapts them to its
fixed values and ranges (or drops them) with a notice."""

import pytest

from orchestrator.plan import plan_search
from orchestrator.settings import SearchSettings
from search_spaces import SPACES, get_space
from search_spaces.priors import Prior, check_prior, fit_prior
from trainables import get_spec


@pytest.mark.parametrize("name", list(SPACES))
def test_every_prior_fits_its_space_and_is_a_valid_config(name):
    spec = SPACES[name]
    assert spec.priors, f"space {name} names no prior"
    config_cls = get_spec(spec.trainable).config_cls
    for prior in spec.priors:
        check_prior(spec.space, prior)  # raises on a renamed parameter or a value outside a range
        constants = spec.space(_Fixed(prior.params))
        config_cls.from_dict({**prior.params, **constants})


class _Fixed:
    """An Optuna-like trial answering from a dict (FixedTrial refuses unused parameters)."""

    def __init__(self, values):
        self.values = values

    def suggest_float(self, name, low, high, **_):
        return self.values[name]

    suggest_int = suggest_float

    def suggest_categorical(self, name, choices):
        return self.values[name]


def test_a_prior_that_no_longer_fits_is_an_error():
    space = get_space("adaptive_ratio").space
    recipe = get_space("adaptive_ratio").priors[0]
    renamed = {**recipe.params, "generator_steps": recipe.params["gen_steps"]}
    del renamed["gen_steps"]
    with pytest.raises(
        ValueError, match="missing \\['gen_steps'\\], not in the space \\['generator_steps'\\]"
    ):
        check_prior(space, Prior("renamed", renamed))
    with pytest.raises(ValueError, match="gen_steps=40 is outside"):
        check_prior(space, Prior("out", {**recipe.params, "gen_steps": 40}))


def test_fit_prior_adapts_to_fixed_values_and_ranges_or_drops():
    spec = get_space("adaptive_ratio")
    recipe = spec.priors[0]
    point, notice = fit_prior(spec.space, recipe, {}, {})
    assert point == recipe.params and notice == ""
    # a fixed numeric value replaces the prior's; a narrowed range moves it to the nearest bound
    point, notice = fit_prior(spec.space, recipe, {"clean_frac": 0.5}, {"gen_steps": (1, 4)})
    assert "clean_frac" not in point and point["gen_steps"] == 4
    assert (
        notice
        == "prior learned_attacker: clean_frac 0.2 -> 0.5 (fixed), gen_steps 5 -> 4 (--range gen_steps=1:4)"
    )
    # a fixed choice that excludes the prior's branch drops it
    point, notice = fit_prior(spec.space, recipe, {"generator": "image"}, {})
    assert point is None
    assert (
        notice
        == "prior learned_attacker dropped: it needs generator=gradient, this search fixes generator=image"
    )
    # so does any other choice the recipe makes differently
    assert fit_prior(spec.space, recipe, {"adv_copies": 2}, {})[0] is None


def _plan(tmp_path, **kw):
    settings = SearchSettings(space="adaptive_ratio", storage=str(tmp_path), name="p", **kw)
    return plan_search(settings, check_dataset=False)


def test_a_search_runs_its_priors_first_unless_told_not_to(tmp_path):
    plan = _plan(tmp_path)
    assert [name for name, _ in plan.priors] == ["learned_attacker"]
    assert plan.first_points[0]["generator"] == "gradient"
    assert _plan(tmp_path, no_priors=True).first_points == []
    dropped = _plan(tmp_path, config={"generator": "image"})
    assert dropped.priors == [] and "dropped" in dropped.prior_notices[0]


def test_priors_reach_the_optuna_study_first(tmp_path):
    from orchestrator.tuner import search_algorithms

    searcher, _ = search_algorithms(_plan(tmp_path))
    first = searcher.suggest("first")
    assert first["gen_steps"] == 5 and first["k"] == 1, "the prior is the study's first trial"
