"""Search spaces checked with Optuna's FixedTrial and the branch explorer."""

import itertools

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from search_spaces import SPACES, Objective, get_space
from search_spaces.introspect import ConstrainedSpace, distributions_for, explore
from trainables import get_spec


def corners(space):
    """Parameter assignments hitting every branch, at the low and the high end of every range."""
    infos = explore(space)
    categorical = {
        p.name: p.distribution.choices for p in infos if isinstance(p.distribution, CategoricalDistribution)
    }
    for combo in itertools.product(*categorical.values()):
        for end in ("low", "high"):
            values = dict(zip(categorical, combo))
            for p in infos:
                if p.name not in values:
                    values[p.name] = getattr(p.distribution, end)
            yield values


@pytest.mark.parametrize("name", list(SPACES))
def test_every_branch_and_corner_is_a_valid_trainable_config(name):
    spec = SPACES[name]
    config_cls = get_spec(spec.trainable).config_cls
    for values in corners(spec.space):
        trial = optuna.trial.FixedTrial(values)
        constants = spec.space(trial)
        used = {k: values[k] for k in distributions_for(spec.space, values)}
        config_cls.from_dict({**used, **constants})  # raises on an unknown key or a bad value


def test_an_objective_takes_its_direction_from_the_metric_registry():
    assert Objective("val/apgd_acc").mode == "max" and Objective("val/loss").mode == "min"
    with pytest.raises(ValueError, match="registry says 'max'"):
        Objective("val/acc", "min")


def test_test_keys_cannot_be_objectives():
    with pytest.raises(ValueError, match="validation keys only"):
        Objective("test/acc", "max")


def test_adaptive_ratio_space_is_conditional():
    infos = {p.name: p for p in explore(get_space("adaptive_ratio").space)}
    assert infos["k"].conditions == ("schedule=fixed",)
    assert infos["target_gen_loss"].conditions == ("schedule=adaptive",)
    assert infos["k_steps"].conditions == ("schedule=stepped",)
    assert infos["cls_lr"].conditions == ()
    assert infos["gen_steps"].conditions == ("generator=gradient",)
    assert infos["diversity_weight"].conditions == ("adv_copies=2",)
    fixed = optuna.trial.FixedTrial(
        {
            "cls_lr": 1e-3,
            "gen_lr": 1e-3,
            "gen_eps": 0.3,
            "clean_frac": 0.5,
            "generator": "image",
            "schedule": "adaptive",
            "target_gen_loss": 0.6,
            "k_min": 2,
            "k_max": 100,
        }
    )
    assert get_space("adaptive_ratio").space(fixed) == {"k": 2}


def test_constrained_space_fixes_and_narrows():
    space = ConstrainedSpace(
        get_space("classic").space, fixed={"adv_train": "pgd"}, ranges={"lr": (1e-3, 2e-3)}
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        out = space(trial)
        assert out["adv_train"] == "pgd"
        assert 1e-3 <= trial.params["lr"] <= 2e-3
        assert "adv_eps" in trial.params, "the fixed value selects the branch"
        assert "adv_train" not in trial.params, "a fixed parameter is not searched"
        study.tell(trial, 0.5)


def test_unknown_space():
    with pytest.raises(KeyError, match="unknown space"):
        get_space("nope")


def test_a_space_module_dropped_into_the_package_declares_its_trainable(tmp_path, monkeypatch):
    """A fourth in-tree trainable is its trainable module and its space module: the space module
    (SPACE, TRAINABLE) is found by the package, and the catalog knows its trainable."""
    import search_spaces
    from trainables import catalog

    (tmp_path / "zz_fourth.py").write_text(
        "from search_spaces.spec import Objective, SpaceSpec\n"
        "from trainables.catalog import TrainableInfo\n"
        "def space(trial):\n    trial.suggest_float('lr', 1e-3, 1e-1, log=True)\n    return {}\n"
        "TRAINABLE = TrainableInfo('zz_fourth', 'tests.extra_trainable', 'pass', ('val/acc',))\n"
        "SPACE = SpaceSpec('zz_fourth', 'zz_fourth', space, Objective('val/acc', 'max'), 2, 2, 'fourth')\n"
    )
    monkeypatch.setattr(search_spaces, "__path__", [*search_spaces.__path__, str(tmp_path)])
    monkeypatch.setattr(search_spaces, "SPACES", dict(search_spaces.SPACES))
    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))
    monkeypatch.delitem(__import__("sys").modules, "search_spaces.zz_fourth", raising=False)
    search_spaces._discover()
    assert search_spaces.get_space("zz_fourth").trainable == "zz_fourth"
    assert catalog.get_info("zz_fourth").unit == "pass" and "zz_fourth" in catalog.names()
