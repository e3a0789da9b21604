"""Training that knows its budget: the classifier's learning rate decays to the end of the trial's
budget (its iterations, or its time to the search's deadline) and the training attack's eps
ramps up over a share of it."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from orchestrator.cli import cli
from trainables.catalog import smoke_config
from trainables.classic import SPEC as CLASSIC
from trainables.deadline import TimeBudget, TrialClock
from trainables.reporting import MemoryReporter
from trainables.safe_load import load_weights
from trainables.schedules import lr_factor, ramp_factor
from trainables.trial import run_trial


def test_learning_rate_schedules_end_at_their_floor():
    assert [lr_factor("constant", p) for p in (0, 0.5, 1)] == [1.0, 1.0, 1.0]
    assert [lr_factor("linear", p) for p in (0, 0.5, 1)] == [1.0, 0.5, 0.0]
    assert lr_factor("cosine", 0) == 1.0 and lr_factor("cosine", 1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("linear", 1, floor=0.1) == pytest.approx(0.1)
    assert lr_factor("linear", 2.0) == 0.0 and lr_factor("linear", -1) == 1.0, "clamped to [0, 1]"
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr_factor("step", 0.5)


def test_the_attack_ramps_up_over_its_share_and_never_to_zero():
    assert ramp_factor(0.1, 0.0) == 1.0
    assert ramp_factor(0.1, 0.4) == pytest.approx(0.25) and ramp_factor(0.5, 0.4) == 1.0
    assert ramp_factor(0.0, 0.4) == 0.01


def test_budget_progress_follows_iterations_or_the_deadline_whichever_ends_first(tmp_path):
    free = TrialClock(TimeBudget(""), iterations=4)
    assert free.begin(1) == pytest.approx(1 / 8) and free.begin(4) == pytest.approx(7 / 8)

    def progress(left: float) -> float:
        path = tmp_path / "deadline.json"
        path.write_text(json.dumps({"deadline": 1000.0 + left}))
        clock = TrialClock(TimeBudget(str(path), clock=lambda: 1000.0), iterations=1000, seconds=60.0)
        clock.pace.trained(10.0)
        clock.pace.validated(2.0, test_s=20.0)
        return clock.begin(7)

    # 60 s trained and validated, 140 s to the deadline of which 20 go to the test: the middle of
    # the next iteration (10 s of training, as the last) is (60 + 5) / (60 + 120) of the way.
    assert progress(140.0) == pytest.approx(65 / 180)
    # A resumed search with a new, longer deadline: the end moves and the progress falls back.
    assert progress(600.0) < progress(140.0)
    assert progress(-5.0) == 1.0, "past the deadline"


@pytest.mark.train
def test_a_trial_decays_its_classifier_learning_rate_to_the_end_and_resumes_on_schedule():
    config = {**smoke_config("classic"), "epochs": 3, "lr_schedule": "linear", "lr": 1e-3}
    reporter = MemoryReporter()
    run_trial(CLASSIC, {**config, "epochs": 2}, reporter)  # stopped after 2 of 3 epochs
    (group,) = load_weights(reporter.checkpoint)["program"]["optimizer"]["param_groups"]
    assert group["initial_lr"] == 1e-3 and group["lr"] == pytest.approx(1e-3 * (1 - 1.5 / 2))
    resumed = MemoryReporter(resume_from=reporter.checkpoint)
    run_trial(CLASSIC, config, resumed)  # the budget grew to 3: the schedule follows the new end
    (group,) = load_weights(resumed.checkpoint)["program"]["optimizer"]["param_groups"]
    assert group["initial_lr"] == 1e-3 and group["lr"] == pytest.approx(1e-3 * (1 - 2.5 / 3))
    assert math.isfinite(resumed.reports[-1]["val/acc"])


@pytest.mark.parametrize(
    "setting",
    ["lr_schedule=step", "lr_floor=2", "eps_ramp=0.95", "width=2", "width=512", "classifier=resnet"],
)
def test_a_schedule_outside_its_range_is_one_line(setting):
    result = CliRunner().invoke(cli, ["train", "-t", "classic", "-s", "dataset=synthetic", "-s", setting])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.train
def test_the_weight_average_is_what_is_checkpointed_as_the_classifier_and_resumes():
    config = {**smoke_config("classic"), "weight_average": 0.5}
    first = MemoryReporter()
    run_trial(CLASSIC, {**config, "epochs": 1}, first)
    one = load_weights(first.checkpoint)["program"]
    for key, value in one["classifier"].items():  # the first average is the weights themselves
        assert torch.equal(value, one["trained_classifier"][key]), key
    second = MemoryReporter(resume_from=first.checkpoint)
    run_trial(CLASSIC, {**config, "epochs": 2}, second)
    two = load_weights(second.checkpoint)["program"]
    key = "features.0.weight"
    expected = 0.5 * one["classifier"][key] + 0.5 * two["trained_classifier"][key]
    torch.testing.assert_close(two["classifier"][key], expected)
    assert not torch.equal(two["classifier"][key], two["trained_classifier"][key])
