"""--time-budget: trials end themselves before the search's deadline (tested and checkpointed),
new trials stop late in the budget, and a resume gets what is left of it."""

import json
import os

import pytest

from orchestrator.errors import UserError
from orchestrator.plan import plan_search
from orchestrator.settings import SearchSettings
from orchestrator.trial_rows import outcome, trial_row
from tests.conftest import synthetic
from trainables import get_spec
from trainables.deadline import MAX_GROWTH, Pace, TimeBudget, TrialClock
from trainables.reporting import MemoryReporter
from trainables.trial import run_trial


def _deadline_file(tmp_path, deadline):
    path = tmp_path / "deadline.json"
    path.write_text(json.dumps({"deadline": deadline}))
    return str(path)


def test_the_deadline_file_says_how_many_seconds_are_left(tmp_path):
    now = [1000.0]
    deadline = TimeBudget(_deadline_file(tmp_path, 1100.0), clock=lambda: now[0])
    assert deadline.seconds_left() == 100.0
    now[0] = 1101.0
    assert deadline.seconds_left() == -1.0, "past the deadline"
    assert TimeBudget(str(tmp_path / "missing.json")).seconds_left() is None
    assert TimeBudget("").seconds_left() is None and TimeBudget("").read() == {}
    (tmp_path / "list.json").write_text("[1, 2]")
    assert TimeBudget(str(tmp_path / "list.json")).seconds_left() is None, "not a record: no deadline"


def test_pace_ends_an_iteration_when_the_next_one_and_the_test_would_not_fit():
    pace = Pace()
    assert not pace.ends_now(None), "no deadline"
    pace.trained(30.0)
    pace.validated(5.0, test_s=20.0)
    assert pace.next_iteration_s() == 35.0, "no growth measured yet: the last iteration's cost"
    assert not pace.ends_now(56.0) and pace.ends_now(54.0)  # 30 + 5 + 20 = 55
    pace.trained(30.0)
    assert pace.next_iteration_s() == 35.0
    pace.trained(15.0)  # faster (more threads): taken as no growth, not as shrinking
    assert pace.next_iteration_s() == 20.0
    pace.trained(300.0)  # a 20-fold jump is capped
    assert pace.next_iteration_s() == 300.0 * MAX_GROWTH + 5.0


def test_pace_on_the_adaptive_schedule_that_overran_its_deadline_by_13_minutes():
    """random-3600s-seed1's trial ec73f237 (docs/SEARCH_VALUE.md): cycles of 445, 632 and 986 s
    of training, 3.7 s of robust validation, a 39 s test. Its 13th cycle (1344 s) started 629 s
    before the deadline and ended 759 s past it; with its growth counted it ends after cycle 12."""
    pace = Pace()
    pace.trained(444.7)
    pace.trained(631.6)
    pace.validated(3.7, test_s=38.7)
    assert not pace.ends_now(1618.0), "after cycle 11: cycle 12 (~900 s) and the test fit"
    pace.trained(985.6)
    assert pace.ends_now(629.0), "after cycle 12: cycle 13 (~1540 s) does not"


@pytest.mark.parametrize("eval_s,share", [(2.70, 0.795), (2.58, 0.825), (2.42, 0.775), (2.45, 0.800)])
def test_the_test_reserve_covers_the_readme_jobs_measured_test_without_wasting_minutes(eval_s, share):
    """The README's main job on 2 CPU cores (2026-12-07): its last four robust validations
    (seconds, share left by APGD) and a final test of 124 s (APGD-CE, APGD-T x9, Square-1,000 on
    500 images). With a Square query at a third of a step it reserved 146-165 s and searches ended
    up to two minutes early; now every estimate covers the test with a margin of at most 20%."""
    from trainables.configs import AdaptiveRatioConfig
    from trainables.deadline import test_estimate
    from trainables.evaluation import attack_steps

    cfg = AdaptiveRatioConfig.from_dict({"test_robust_n": 500})
    val, test = cfg.eval_spec(), cfg.eval_spec(final=True)
    ratio = attack_steps(test, share) / attack_steps(val, share)
    reserved = test_estimate(eval_s, test.robust_n, val.robust_n, ratio)
    assert 124.0 <= reserved <= 1.2 * 124.0, reserved


def test_the_clock_decides_the_last_iteration_in_one_place(tmp_path):
    now = [1000.0]
    clock = TrialClock(TimeBudget(_deadline_file(tmp_path, 1100.0), clock=lambda: now[0]), iterations=5)
    clock.begin(1)
    assert clock.trained(30.0) == 30.0, "the clock at the model it trained"
    clock.pace.validated(5.0, test_s=20.0)
    clock.validated(30.0, 5.0)
    assert clock.seconds == 35.0 and clock.reported_at == 30.0
    assert not clock.is_last(1), "100 s left: the next iteration (35 s) and the test (20 s) fit"
    now[0] = 1050.0
    assert clock.is_last(2) and clock.ended_by_deadline, "50 s left: they do not"
    now[0] = 1200.0
    assert clock.is_last(3) and clock.ended_by_deadline, "past the deadline"
    free = TrialClock(TimeBudget(""), iterations=5)
    assert not free.is_last(4) and free.is_last(5) and not free.ended_by_deadline, "the budget's end"


@pytest.mark.train
def test_a_trial_tests_the_model_it_has_when_the_next_iteration_would_not_fit(tmp_path, monkeypatch):
    import trainables.deadline

    calls = []

    def next_iteration_s(self):
        calls.append(1)
        return 0.0 if len(calls) < 3 else float("inf")  # the third iteration's successor would not fit

    monkeypatch.setattr(trainables.deadline.Pace, "next_iteration_s", next_iteration_s)
    reporter = MemoryReporter()
    config = synthetic(epochs=50, robust_every=10, deadline_file=_deadline_file(tmp_path, 4e9))
    run_trial(get_spec("classic"), config, reporter)
    assert [r["iteration"] for r in reporter.reports] == [1, 2, 3]
    last = reporter.reports[-1]
    assert last["deadline_end"] == 1 and "test/acc" in last and "test/apgd_acc" in last
    assert last["val/robust_iteration"] == 3, "the last model is validated under attack too"
    assert reporter.reports[1]["val/robust_iteration"] == 1
    assert reporter.load_checkpoint()["iteration"] == 3, "checkpointed at its end"


@pytest.mark.train
def test_a_trial_past_its_deadline_ends_tested_and_checkpointed(tmp_path):
    spec = get_spec("classic")
    reporter = MemoryReporter()
    config = synthetic(epochs=50, deadline_file=_deadline_file(tmp_path, 0.0))
    run_trial(spec, config, reporter)
    assert len(reporter.reports) == 1, "the first iteration is the last"
    last = reporter.reports[-1]
    assert last["deadline_end"] == 1 and "test/acc" in last and "val/apgd_acc" in last
    assert reporter.checkpoint is not None
    row = trial_row(
        trial_id="t",
        status="TERMINATED",
        config={"epochs": 50},
        history=reporter.reports,
        space="classic",
        trainable="classic",
        budget_key="epochs",
        checkpoint_path=None,
    )
    assert row["outcome"] == "completed" and row["iterations"] == 1 and row["train_time_s"] > 0
    # a far deadline changes nothing
    far = MemoryReporter()
    run_trial(spec, synthetic(epochs=2, deadline_file=_deadline_file(tmp_path, 4e9)), far)
    assert len(far.reports) == 2 and "deadline_end" not in far.reports[-1]


def test_outcome_of_a_trial_the_deadline_ended():
    assert outcome("TERMINATED", 3, 10, False, deadline_end=True) == "completed"
    assert outcome("TERMINATED", 3, 10, False) == "early_stopped"


def test_the_budget_is_spent_across_drivers_and_a_killed_one_counts_to_its_last_report(tmp_path):
    budget = TimeBudget(str(tmp_path / "deadline.json"))
    assert budget.start(600.0, now=1000.0) == 1600.0
    budget.stop(now=1200.0)  # 200 s spent
    assert budget.start(600.0, now=5000.0) == 5400.0
    # this driver is SIGKILLed: never stops; its last report was at 5100
    history = [{"timestamp": 5050}, {"timestamp": 5100}, {"timestamp": 900}]
    assert budget.start(600.0, history, now=9000.0) == 9300.0
    record = json.loads((tmp_path / "deadline.json").read_text())
    assert record["spent_s"] == 300.0 and record["run_started"] == 9000.0


def test_new_trials_start_only_in_the_exploration_share(tmp_path):
    budget = TimeBudget(_deadline_file(tmp_path, 1000.0))
    assert budget.exploring(400.0, now=800.0)  # 200 s left > 25% of 400
    assert not budget.exploring(400.0, now=920.0)
    assert TimeBudget(str(tmp_path / "none.json")).exploring(400.0)
    assert TimeBudget.backstop(0) == 0 and TimeBudget.backstop(600.0) == 600.0 * 1.25 + 300.0


def test_plan_with_a_time_budget(tmp_path):
    def plan(**kw):
        return plan_search(
            SearchSettings(space="classic", storage=str(tmp_path), name="tb", **kw), check_dataset=False
        )

    with pytest.raises(UserError, match="--time-budget 30s is shorter than"):
        plan(time_budget_s=30.0)
    p = plan(time_budget_s=600.0)
    assert p.max_iterations == 1000, "trials train until the deadline; the iterations are a cap"
    assert p.trial_config["deadline_file"].endswith("tb/deadline.json")
    assert plan(time_budget_s=600.0, max_iterations=7).max_iterations == 7
    assert "deadline_file" not in plan().trial_config
    # trials are not created ahead to wait PENDING past the exploration share
    assert p.settings.max_concurrent == int(os.cpu_count() or 1)
    assert plan(time_budget_s=600.0, cpus_per_trial=2).settings.max_concurrent == max(
        1, (os.cpu_count() or 1) // 2
    )
    assert plan(time_budget_s=600.0, max_concurrent=5).settings.max_concurrent == 5
    assert plan().settings.max_concurrent == 0


def test_the_searcher_proposes_no_trial_late_in_the_budget(tmp_path):
    from ray.tune.search import Searcher

    from orchestrator.searchers import make_searcher
    from search_spaces import get_space

    def searcher(deadline):
        return make_searcher(
            get_space("classic").space,
            ["val/apgd_acc"],
            ["max"],
            searcher="random",
            seed=0,
            budget_key="epochs",
            budget=3,
            deadline_file=_deadline_file(tmp_path, deadline),
            time_budget_s=600.0,
        )

    import time

    assert searcher(time.time() + 500).suggest("a") not in (None, Searcher.FINISHED)
    assert searcher(time.time() + 100).suggest("b") == Searcher.FINISHED


def test_after_exploration_the_trials_left_share_the_cores(tmp_path):
    import time
    from types import SimpleNamespace

    from orchestrator.core_share import CoreShare

    TimeBudget(str(tmp_path / "deadline.json")).start(400.0, now=time.time() - 390.0)  # exploring is over
    share = CoreShare(str(tmp_path), 400.0, cpus=4, cpus_per_trial=1)
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    share.on_trial_start(0, [], a)
    share.on_trial_start(0, [], b)
    assert json.loads((tmp_path / "deadline.json").read_text())["threads"] == 2
    share.on_trial_complete(0, [], a)
    record = json.loads((tmp_path / "deadline.json").read_text())
    assert record["threads"] == 4 and "deadline" in record, "the last trial gets every core"
    deadline = TimeBudget(str(tmp_path / "deadline.json"))
    deadline.seconds_left()
    assert deadline.cpu_threads() == 4
    # while new trials may still start, every trial keeps the CPUs Ray gave it
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    TimeBudget(str(fresh / "deadline.json")).start(400.0)
    early = CoreShare(str(fresh), 400.0, cpus=4, cpus_per_trial=1)
    early.on_trial_start(0, [], a)
    assert "threads" not in json.loads((fresh / "deadline.json").read_text())


@pytest.mark.train
def test_a_trial_takes_the_threads_the_driver_gives_it(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        path = tmp_path / "deadline.json"
        path.write_text(json.dumps({"deadline": 4e9, "threads": 1}))
        run_trial(get_spec("classic"), synthetic(epochs=1, deadline_file=str(path)), MemoryReporter())
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
