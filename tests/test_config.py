import dataclasses

import pytest

from trainables.adaptive_ratio import AdaptiveRatioConfig
from trainables.classic import ClassicConfig
from trainables.config import ConfigError
from trainables.wgan_gp import WganGpConfig


def test_defaults_are_valid_and_frozen():
    cfg = ClassicConfig.from_dict({})
    assert cfg.epochs == 10 and cfg.adv_train == "none"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown config key 'learning_rat'"):
        ClassicConfig.from_dict({"learning_rat": 0.1})
    with pytest.raises(ConfigError, match="did you mean 'n_critic'"):
        WganGpConfig.from_dict({"n_critics": 5})


@pytest.mark.parametrize(
    "values,match",
    [
        ({"lr": -1}, "below its minimum"),
        ({"adv_eps": 2.0}, "above its maximum"),
        ({"adv_train": "cw"}, "not one of"),
        ({"epochs": 1.5}, "expected an integer"),
        ({"lr": float("nan")}, "not finite"),
        ({"fgsm_eps": "0.1,1.2"}, "above its maximum"),
        ({"channels_last": "maybe"}, "expected a boolean"),
    ],
)
def test_bad_values_fail_with_a_clear_message(values, match):
    with pytest.raises(ConfigError, match=match):
        ClassicConfig.from_dict(values)


def test_strings_from_a_command_line_are_coerced():
    cfg = ClassicConfig.from_dict(
        {"lr": "0.01", "epochs": "3", "noise_eval": "false", "fgsm_eps": "0.05, 0.1"}
    )
    assert cfg.lr == 0.01 and cfg.epochs == 3 and cfg.noise_eval is False
    assert cfg.fgsm_eps == (0.05, 0.1)
    assert cfg.budget == 3


def test_stepped_schedule_parses_and_validates():
    cfg = AdaptiveRatioConfig.from_dict({"schedule": "stepped", "k_steps": "1:6, 5:8, 9:12"})
    assert cfg.k_steps == ((1, 6), (5, 8), (9, 12))
    assert AdaptiveRatioConfig.from_dict({"k_steps": [[1, 2], [3, 4]]}).k_steps == ((1, 2), (3, 4))
    with pytest.raises(ConfigError, match="start at cycle 1"):
        AdaptiveRatioConfig.from_dict({"schedule": "stepped", "k_steps": "2:6"})


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="k_min"):
        AdaptiveRatioConfig.from_dict({"k_min": 10, "k_max": 5})
    with pytest.raises(ConfigError, match="within"):
        AdaptiveRatioConfig.from_dict({"schedule": "adaptive", "k": 50, "k_max": 10})


def test_round_trip_and_replace():
    cfg = WganGpConfig.from_dict({"n_critic": 3, "stages": [10, 20]})
    again = WganGpConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.replace(n_critic=7).n_critic == 7
    rows = {r["name"]: r for r in WganGpConfig.describe()}
    assert rows["n_critic"]["valid"] == "[1, 100]"
