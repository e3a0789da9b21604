"""ASHA's and ParetoASHA's rung records come back from history.parquet on a resume (Ray Tune
never saves a scheduler's state)."""

import pickle

from ray.tune.schedulers import TrialScheduler

from orchestrator.results import ResultsStore
from orchestrator.schedulers import DurableASHA, ParetoASHA, make_scheduler
from orchestrator.storage import Location


class _Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def _write_history(experiment, reports):
    """reports: (trial id, iteration, val/acc, val/apgd_acc)"""
    rows = [
        {"trial_id": t, "iteration": i, "val/acc": acc, "val/apgd_acc": apgd} for t, i, acc, apgd in reports
    ]
    ResultsStore(Location.parse(str(experiment))).append(
        rows, [{"trial_id": t} for t in {r[0] for r in reports}], {}
    )


def _resumed(scheduler):
    """The scheduler as Tuner.restore gets it: unpickled from how it was before the first trial."""
    return pickle.loads(pickle.dumps(scheduler))


def test_asha_rungs_come_back_and_stop_a_later_trial_below_the_cut(tmp_path):
    # Three trials reached rung 1 (of max_t 9, eta 3) before the driver died; a promoted one rung 3.
    _write_history(
        tmp_path,
        [
            ("a", 1, 0.9, 0.6),
            ("a", 2, 0.9, 0.62),
            ("a", 3, 0.9, 0.65),
            ("b", 1, 0.9, 0.5),
            ("c", 1, 0.9, 0.4),
        ],
    )
    fresh = make_scheduler("asha", ["val/apgd_acc"], ["max"], max_t=9, experiment_uri=str(tmp_path))
    assert isinstance(fresh, DurableASHA)
    sched = _resumed(fresh)
    sched.on_trial_add(None, _Trial("d"))  # Tune adds every restored and new trial first
    records = sched.rung_records()
    assert records[1.0] == {"a": 0.6, "b": 0.5, "c": 0.4}
    assert records[3.0] == {"a": 0.65}
    # A new trial at rung 1 below the recorded cut (the top third: 0.5 < cut) is stopped ...
    assert (
        sched.on_trial_result(None, _Trial("d"), {"iteration": 1, "val/apgd_acc": 0.45})
        == TrialScheduler.STOP
    )
    # ... where an empty scheduler (what Ray Tune restores) would have promoted it.
    empty = make_scheduler("asha", ["val/apgd_acc"], ["max"], max_t=9, experiment_uri=str(tmp_path / "none"))
    empty.on_trial_add(None, _Trial("d"))
    assert (
        empty.on_trial_result(None, _Trial("d"), {"iteration": 1, "val/apgd_acc": 0.45})
        == TrialScheduler.CONTINUE
    )
    # A trial above the cut goes on; the history is read once.
    sched.on_trial_add(None, _Trial("e"))
    assert (
        sched.on_trial_result(None, _Trial("e"), {"iteration": 1, "val/apgd_acc": 0.7})
        == TrialScheduler.CONTINUE
    )
    assert sched.rung_records()[1.0]["e"] == 0.7 and len(sched.rung_records()[1.0]) == 5


def test_asha_rungs_in_a_trials_seconds_come_back_keyed_on_its_clock(tmp_path):
    # Rungs at 60, 180 and 540 s of a trial's time: "a" reported past 60 s at its 2nd iteration and
    # past 180 s at its 4th; "b" (one slow iteration) past 180 s at its 1st.
    rows = [
        {"trial_id": "a", "iteration": i, "time/trial_s": s, "val/apgd_acc": v}
        for i, s, v in ((1, 40.0, 0.1), (2, 80.0, 0.6), (3, 120.0, 0.62), (4, 190.0, 0.7))
    ] + [{"trial_id": "b", "iteration": 1, "time/trial_s": 300.0, "val/apgd_acc": 0.3}]
    ResultsStore(Location.parse(str(tmp_path))).append(rows, [{"trial_id": "a"}, {"trial_id": "b"}], {})
    fresh = make_scheduler(
        "asha", ["val/apgd_acc"], ["max"], max_t=3600, grace_period=60, experiment_uri=str(tmp_path),
        time_attr="time/trial_s",
    )  # fmt: skip
    sched = _resumed(fresh)
    sched.on_trial_add(None, _Trial("c"))
    records = {m: r for m, r in sched.rung_records().items() if r}
    # (as Ray's ASHA records a report that jumps two rungs: at the higher one only)
    assert records == {60: {"a": 0.6}, 180: {"a": 0.7, "b": 0.3}}
    # A new trial's first report past 60 s (its 3rd iteration, say) below the cut is stopped.
    stop = {"iteration": 3, "time/trial_s": 65.0, "val/apgd_acc": 0.35}
    assert sched.on_trial_result(None, _Trial("c"), stop) == TrialScheduler.STOP


def test_asha_min_mode_and_the_budget_iteration_replay_as_asha_records_them(tmp_path):
    _write_history(tmp_path, [("a", 1, 0.2, 0.0), ("a", 3, 0.1, 0.0)])
    sched = make_scheduler("asha", ["val/acc"], ["min"], max_t=3, experiment_uri=str(tmp_path))
    sched.on_trial_add(None, _Trial("z"))
    assert sched.rung_records() == {3: {}, 1: {"a": -0.2}}  # nothing recorded at the budget (t = max_t)


def test_pareto_asha_rungs_come_back(tmp_path):
    _write_history(tmp_path, [("a", 1, 0.9, 0.6), ("b", 1, 0.8, 0.5), ("c", 1, 0.95, 0.3)])
    sched = _resumed(
        make_scheduler(
            "asha", ["val/acc", "val/apgd_acc"], ["max", "max"], max_t=9, experiment_uri=str(tmp_path)
        )
    )
    assert isinstance(sched, ParetoASHA)
    sched.on_trial_add(None, _Trial("d"))
    assert sched.rung_records()[1] == {"a": [0.9, 0.6], "b": [0.8, 0.5], "c": [0.95, 0.3]}
    dominated = {"iteration": 1, "val/acc": 0.7, "val/apgd_acc": 0.2}
    assert sched.on_trial_result(None, _Trial("d"), dominated) == TrialScheduler.STOP


def test_asha_stops_a_trial_at_its_metrics_worst_value_where_others_are_recorded(tmp_path):
    """Ray's ASHA stops only below the cut: with most of a rung at 0 robust accuracy (cut 0)
    every trial at 0 would go on; DurableASHA cuts those (the first at a rung goes on)."""

    def report(sched, trial_id, t, value, metric="val/apgd_acc"):
        sched.on_trial_add(None, _Trial(trial_id))
        return sched.on_trial_result(None, _Trial(trial_id), {"iteration": t, metric: value})

    sched = make_scheduler("asha", ["val/apgd_acc"], ["max"], max_t=27, experiment_uri=str(tmp_path))
    assert report(sched, "a", 1, 0.0) == TrialScheduler.CONTINUE, "first at rung 1: nothing to rank it by"
    assert report(sched, "b", 1, 0.0) == TrialScheduler.STOP, "tied at the worst value: cut"
    assert report(sched, "c", 1, 0.1) == TrialScheduler.CONTINUE
    assert report(sched, "a", 2, 0.0) == TrialScheduler.CONTINUE, "between rungs nothing is decided"
    assert report(sched, "a", 3, 0.0) == TrialScheduler.CONTINUE, "first at rung 3"
    assert sched.rung_records()[1.0] == {"a": 0.0, "b": 0.0, "c": 0.1}
    assert "num_stopped=1" in sched.debug_string()
    # a metric minimised, or one without a finite worst value, keeps Ray's rule: ties go on
    loss = make_scheduler("asha", ["val/loss"], ["min"], max_t=27, experiment_uri=str(tmp_path / "l"))
    assert report(loss, "a", 1, 2.3, "val/loss") == TrialScheduler.CONTINUE
    assert report(loss, "b", 1, 2.3, "val/loss") == TrialScheduler.CONTINUE
