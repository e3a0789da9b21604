"""Searcher, scheduler, results and settings logic, without running Ray."""

import json
import logging
import math

import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from orchestrator.compat.tune import optuna_trials, searcher_study
from orchestrator.errors import UserError
from orchestrator.leaderboard import display_columns, format_rows, leaderboard
from orchestrator.pareto import crowding, pareto_front, pareto_ranks
from orchestrator.plan import plan_search
from orchestrator.results import to_table
from orchestrator.rules import is_feasible
from orchestrator.schedulers import DurableASHA, ParetoASHA, make_scheduler
from orchestrator.searchers import BudgetAwareOptunaSearch, make_sampler
from orchestrator.settings import SearchSettings
from orchestrator.storage import Location, check_writable
from orchestrator.tracking import resolve_mode
from orchestrator.trial_rows import mark_pareto, trial_row
from orchestrator.tuner import build_tuner, search_algorithms
from search_spaces import get_space


def test_pareto_ranks_and_front():
    points = [(1, 0), (0, 1), (0.5, 0.5), (0.4, 0.4), (0, 0)]
    assert pareto_ranks(points) == [0, 0, 0, 1, 2]
    assert pareto_front(points) == [0, 1, 2]
    assert crowding(points[:3])[2] < math.inf and crowding(points[:3])[0] == math.inf


def test_pareto_asha_keeps_the_top_fraction_of_a_rung():
    sched = ParetoASHA(["a", "b"], ["max", "max"], max_t=9, grace_period=1, reduction_factor=3)
    assert sorted(sched._rungs) == [1, 3]
    assert sched.decide("t1", 1, [0.5, 0.5]) == TrialScheduler.CONTINUE  # first at the rung
    assert sched.decide("t2", 1, [0.1, 0.1]) == TrialScheduler.STOP  # dominated
    assert sched.decide("t3", 1, [0.9, 0.9]) == TrialScheduler.CONTINUE  # dominates everyone
    assert sched.decide("t4", 1, [0.2, 0.2]) == TrialScheduler.STOP
    assert sched.decide("t1", 3, [0.6, 0.6]) == TrialScheduler.CONTINUE
    # min-mode objectives are negated: lower is better
    low = ParetoASHA(["loss"], ["min"], max_t=3, grace_period=1, reduction_factor=2)
    assert low.decide("x", 1, low._point({"loss": 1.0})) == TrialScheduler.CONTINUE
    assert low.decide("y", 1, low._point({"loss": 2.0})) == TrialScheduler.STOP


def test_make_scheduler_choices():
    assert isinstance(make_scheduler("asha", ["val/acc"], ["max"], max_t=4), DurableASHA)
    assert isinstance(make_scheduler("asha", ["a", "b"], ["max", "max"], max_t=4), ParetoASHA)
    assert type(make_scheduler("fifo", ["a", "b"], ["max", "max"], max_t=4)).__name__ == "FIFOScheduler"
    with pytest.raises(ValueError):
        make_scheduler("hyperband", ["a"], ["max"], max_t=4)
    with pytest.raises(ValueError, match="single-objective"):
        make_sampler("cmaes", 0, multi_objective=True)


def _searcher(metrics, modes):
    multi = len(metrics) > 1
    return BudgetAwareOptunaSearch(
        space=get_space("classic").space,
        metric=list(metrics) if multi else metrics[0],
        mode=list(modes) if multi else modes[0],
        sampler=make_sampler("random", 0, multi),
        budget_key="epochs",
        budget=3,
    )


@pytest.mark.parametrize("metrics", [["val/acc"], ["val/acc", "val/pgd_acc"]])
def test_partial_budget_trials_are_told_pruned(metrics):
    searcher = _searcher(metrics, ["max"] * len(metrics))
    for tid in ("full", "partial", "diverged", "failed"):
        searcher.suggest(tid)
    values = {m: 0.5 for m in metrics}
    searcher.on_trial_result("partial", {**values, "iteration": 1, "training_iteration": 1})
    searcher.on_trial_complete("full", {**values, "iteration": 3, "config": {"epochs": 3}})
    searcher.on_trial_complete("partial", {**values, "iteration": 1, "config": {"epochs": 3}})
    searcher.on_trial_complete("diverged", {**{m: 0.0 for m in metrics}, "iteration": 2, "diverged": 1})
    searcher.on_trial_complete("failed", None, error=True)
    states = [t.state for t in searcher_study(searcher).trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL]
    if len(metrics) > 1:
        front = {t.number for t in searcher_study(searcher).best_trials}
        assert 1 not in front, "a pruned (partial-budget) trial is never on the Pareto front"


def test_a_trial_the_study_already_has_is_not_told_again(caplog):
    """On a resume the study database can be ahead of the searcher's pickle: the replayed
    completion of a trial the study already holds is not told twice (no Optuna warning)."""
    searcher = _searcher(["val/acc"], ["max"])
    searcher.suggest("a")
    study = searcher_study(searcher)
    study.tell(study.trials[0].number, 0.7)  # what the killed driver told, saved in the database
    with caplog.at_level(logging.INFO, logger="ray.tune.search.optuna.optuna_search"):
        searcher.on_trial_complete("a", {"val/acc": 0.7, "iteration": 3, "config": {"epochs": 3}})
    assert "Cannot tell" not in caplog.text
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert study.trials[0].value == 0.7


def _row(tid, status, iters, budget=3, diverged=0, **last):
    history = [{"iteration": i, "diverged": 0} for i in range(1, iters)]
    history.append({"iteration": iters, "diverged": diverged, **last})
    return trial_row(
        trial_id=tid,
        status=status,
        config={"epochs": budget, "lr": 0.1},
        history=history,
        space="classic",
        trainable="classic",
        budget_key="epochs",
        checkpoint_path=None,
    )


def test_trial_rows_outcomes_and_front():
    rows = [
        _row("a", "TERMINATED", 3, **{"val/acc": 0.9, "val/pgd_acc": 0.1}),
        _row("b", "TERMINATED", 3, **{"val/acc": 0.5, "val/pgd_acc": 0.6}),
        _row("c", "TERMINATED", 1, **{"val/acc": 0.99, "val/pgd_acc": 0.9}),  # early-stopped
        _row("d", "TERMINATED", 2, diverged=1, **{"val/acc": 0.0, "val/pgd_acc": 0.0}),
        _row("e", "ERROR", 1),
        _row("f", "TERMINATED", 3, **{"val/acc": 0.4, "val/pgd_acc": 0.5}),
    ]
    assert [r["outcome"] for r in rows] == [
        "completed",
        "completed",
        "early_stopped",
        "diverged",
        "error",
        "completed",
    ]
    mark_pareto(rows, [("val/acc", "max"), ("val/pgd_acc", "max")])
    assert [r["trial_id"] for r in rows if r["pareto"]] == ["a", "b"], "partial trial c is kept off"
    ranked = leaderboard(rows, [("val/acc", "max"), ("val/pgd_acc", "max")])
    assert [r["trial_id"] for r in ranked][:3] == ["a", "b", "f"]
    table = to_table(rows)
    assert table.num_rows == 6 and "config/lr" in table.column_names and "best/val/acc" in table.column_names
    assert "a" in format_rows(ranked, ["trial_id", "outcome"], "table")
    assert format_rows(ranked[:1], ["trial_id", "last/val/acc"], "csv") == "trial_id,last/val/acc\na,0.9"
    assert '"trial_id": "a"' in format_rows(ranked[:1], ["trial_id"], "json")


def test_to_table_types_heterogeneous_rows():
    table = to_table([{"a": 1, "b": None}, {"a": 2.5, "c": b"\x89PNG", "d": [0.1, 0.2]}])
    assert table.schema.field("b").type == "string"  # all-null column typed
    assert table.column("a").to_pylist() == [1.0, 2.5]
    assert table.column("c").to_pylist() == [None, b"\x89PNG"]


def test_resolve_wandb_mode(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_mode(None) == ("offline", "no API key")
    assert resolve_mode("disabled")[0] == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode(None) == ("offline", "from WANDB_MODE")
    with pytest.raises(ValueError):
        resolve_mode("sometimes")


def test_storage_round_trip_and_unwritable(tmp_path):
    loc = check_writable(str(tmp_path / "store")).child("exp", "x.json")
    loc.write_json({"a": 1})
    assert Location.parse(str(tmp_path / "store")).child("exp", "x.json").read_json() == {"a": 1}
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="not writable"):
        check_writable(str(blocker / "sub"))


def _settings(tmp_path, **kw):
    base = dict(space="classic", storage=str(tmp_path), name="x", config={"dataset": "synthetic"})
    if "config" in kw:
        kw["config"] = {**base["config"], **kw["config"]}
    base.update(kw)
    return SearchSettings(**base)


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"space": "nope"}, "unknown space"),
        ({"searcher": "grid"}, "unknown searcher"),
        ({"scheduler": "pbt"}, "unknown scheduler"),
        ({"objective": "pareto", "searcher": "cmaes"}, "single-objective"),
        ({"ranges": {"lr": (0.1, 0.01)}}, "LOW must be below HIGH"),
        ({"ranges": {"lr": (-1, 0.01)}}, "positive"),
        ({"ranges": {"lr": (1e-3, 5.0)}}, "valid range"),
        ({"ranges": {"nope": (1, 2)}}, "not a parameter"),
        ({"ranges": {"adv_train": (1, 2)}}, "categorical; fix one value with -s adv_train=VALUE"),
        ({"config": {"lr": -1.0}}, "below its minimum"),
        ({"config": {"epochs": 3}}, "-s epochs: set the budget with --max-iterations"),
        ({"config": {"dataset": "synthetic", "lrr": 1}}, "did you mean 'lr'"),
        ({"gpus_per_trial": 1.5}, "fraction"),
        ({"cpus_per_trial": 100}, "so no trial could start"),
        ({"num_cpus": 10_000}, "this machine has"),
        ({"address": "127.0.0.1:1"}, "cannot reach"),
        ({"name": "a/b"}, "plain folder name"),
        ({"wandb_mode": "sometimes"}, "unknown W&B mode"),
        ({"min_clean": 1.5}, "--min-clean 1.5 must be in [0, 1]"),
        ({"config": {"apgd_steps": 0}}, "objective val/apgd_acc would never be reported"),
        ({"min_clean": -0.1}, "--min-clean -0.1 must be in [0, 1]"),
        ({"rung_unit": "seconds"}, "--rung-unit seconds needs --time-budget"),
        ({"rung_unit": "minutes"}, "--rung-unit 'minutes': choose from iterations, seconds"),
    ],
)
def test_plan_rejects_bad_input_with_one_line(tmp_path, changes, needle):
    with pytest.raises(UserError) as info:
        plan_search(_settings(tmp_path, **changes))
    assert needle in str(info.value.message)
    assert "\n" not in info.value.message


def test_online_wandb_without_a_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError, match="API key"):
        plan_search(_settings(tmp_path, wandb_mode="online"))


def test_build_tuner_without_starting_ray(tmp_path, monkeypatch):
    import ray

    def no_ray(*args, **kwargs):
        raise AssertionError("building a Tuner must not start Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    plan = plan_search(
        _settings(tmp_path, objective="pareto", scheduler="asha", max_iterations=4, num_samples=5)
    )
    build_tuner(plan)
    searcher, scheduler = search_algorithms(plan)
    assert isinstance(scheduler, ParetoASHA)
    assert isinstance(searcher, BudgetAwareOptunaSearch)
    assert searcher.metric == ["val/acc", "val/apgd_acc"] and searcher.mode == ["max", "max"]
    assert plan.num_samples == 5 and plan.trial_config["epochs"] == 4


@pytest.mark.parametrize("name", ["tpe", "cmaes", "random", "nsga2"])
def test_every_searcher_suggests_valid_configs(name):
    from trainables.classic import ClassicConfig

    searcher = BudgetAwareOptunaSearch(
        space=get_space("classic").space,
        metric="val/acc",
        mode="max",
        sampler=make_sampler(name, 0, False),
        budget_key="epochs",
        budget=2,
    )
    for i in range(8):
        config = searcher.suggest(str(i))
        ClassicConfig.from_dict(config)
        searcher.on_trial_complete(str(i), {"val/acc": 0.1 * i, "iteration": 2, "config": {"epochs": 2}})
    assert len(searcher_study(searcher).trials) == 8


# The main job's collapse: a constant classifier (val/acc 0.116) scored val/pgd_acc 0.125 and
# outranked a 95.8% classifier with 0.0.
COLLAPSED = {"val/acc": 0.116, "val/pgd_acc": 0.125}
WORKING = {"val/acc": 0.958, "val/pgd_acc": 0.0}
CONSTRAINT = {"metric": "val/acc", "min": 0.9}


def test_a_collapsed_trial_never_ranks_first_in_the_results(tmp_path):
    from orchestrator.results import ResultsStore, load_results, table_metadata

    rows = [_row("collapsed", "TERMINATED", 3, **COLLAPSED), _row("working", "TERMINATED", 3, **WORKING)]
    assert leaderboard(rows, [("val/pgd_acc", "max")])[0]["trial_id"] == "collapsed", "without it"
    meta = {"objectives": '[["val/pgd_acc", "max"]]', "constraint": json.dumps(CONSTRAINT)}
    experiment = Location.parse(tmp_path / "exp")
    ResultsStore(experiment).append([], rows, meta)
    trials, _ = load_results(experiment)
    assert table_metadata(trials)["constraint"] == CONSTRAINT
    ranked = leaderboard(trials.to_pylist(), [("val/pgd_acc", "max")])
    assert [(r["trial_id"], r["feasible"]) for r in ranked] == [("working", True), ("collapsed", False)]
    assert "feasible" in display_columns(ranked, [("val/pgd_acc", "max")])


def test_pareto_front_is_the_feasible_front():
    rows = [_row("collapsed", "TERMINATED", 3, **COLLAPSED), _row("working", "TERMINATED", 3, **WORKING)]
    for r in rows:
        r["feasible"] = is_feasible(r, CONSTRAINT)
    mark_pareto(rows, [("val/acc", "max"), ("val/pgd_acc", "max")])
    assert [r["trial_id"] for r in rows if r["pareto"]] == ["working"]


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_the_optuna_study_knows_the_constraint(sampler):
    metrics = ["val/pgd_acc"] if sampler == "tpe" else ["val/acc", "val/pgd_acc"]
    searcher = BudgetAwareOptunaSearch(
        space=lambda t: {"lr": t.suggest_float("lr", 1e-4, 1e-1, log=True)},
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=["max"] * len(metrics) if len(metrics) > 1 else "max",
        sampler=make_sampler(sampler, 0, len(metrics) > 1),
        budget_key="epochs",
        budget=3,
        constraint=CONSTRAINT,
    )
    for tid, values in (("collapsed", COLLAPSED), ("working", WORKING)):
        searcher.suggest(tid)
        searcher.on_trial_complete(tid, {**values, "iteration": 3, "config": {"epochs": 3}})
    searcher.suggest("failed")
    searcher.on_trial_complete("failed", None, error=True)
    study = searcher_study(searcher)
    constraints = [t.constraints for t in study.trials]
    assert constraints[0]["min_clean"] == pytest.approx(0.9 - 0.116)
    assert constraints[1]["min_clean"] == pytest.approx(0.9 - 0.958)
    assert constraints[2]["min_clean"] == 1.0, "a trial that reported nothing is infeasible"
    best = study.best_trial if len(metrics) == 1 else study.best_trials[0]
    assert best.number == 1, "Optuna's best trial is the feasible one, not the collapsed one"


def test_the_dataset_sets_the_default_constraint(tmp_path):
    plan = plan_search(_settings(tmp_path, config={"dataset": "mnist"}), check_dataset=False)
    assert plan.constraint == {"metric": "val/acc", "min": 0.8}
    assert plan.results_metadata()["constraint"] == plan.constraint
    off = plan_search(_settings(tmp_path, min_clean=0.0, config={"dataset": "mnist"}), check_dataset=False)
    assert off.constraint is None
    own = plan_search(_settings(tmp_path, min_clean=0.5), check_dataset=False)
    assert own.constraint == {"metric": "val/acc", "min": 0.5}


def test_robust_validation_is_fresh_at_the_asha_rungs(tmp_path):
    asha = plan_search(_settings(tmp_path, max_iterations=20), check_dataset=False)
    assert asha.scheduler == "asha" and asha.trial_config["robust_rungs"] == (1, 3, 9)
    assert asha.base.robust_rungs == (1, 3, 9)
    grace = plan_search(
        _settings(tmp_path, max_iterations=20, grace_period=2, reduction_factor=2), check_dataset=False
    )
    assert grace.trial_config["robust_rungs"] == (2, 4, 8, 16)
    fifo = plan_search(_settings(tmp_path, scheduler="fifo"), check_dataset=False)
    assert "robust_rungs" not in fifo.trial_config


def test_rungs_in_seconds_are_shares_of_the_time_budget_and_validation_is_fresh_at_them(tmp_path):
    seconds = plan_search(_settings(tmp_path, time_budget_s=3600, rung_unit="seconds"), check_dataset=False)
    assert seconds.rungs == ("time/trial_s", 60, 3600, (60, 180, 540, 1620))
    assert seconds.base.robust_rungs_s == (60, 180, 540, 1620) and seconds.base.robust_rungs == ()
    own = plan_search(
        _settings(tmp_path, time_budget_s=600, rung_unit="seconds", grace_period=30, reduction_factor=2),
        check_dataset=False,
    )
    assert own.rungs[1:] == (30, 600, (30, 60, 120, 240, 480))
    iterations = plan_search(_settings(tmp_path, time_budget_s=3600), check_dataset=False)
    assert iterations.rungs == ("iteration", 1, iterations.max_iterations, iterations.base.robust_rungs)
    assert iterations.base.robust_rungs_s == ()


def _last(**values):
    return {f"last/{k}": v for k, v in values.items()}


def test_masking_flags_catch_the_documented_examples():
    from orchestrator.rules import masking_flags

    # docs/RESULTS.md's FGSM-trained classifier: 53% / 61% / 97% under FGSM at 0.1 / 0.2 / 0.3, 0% PGD.
    fgsm_trained = _last(**{"test/fgsm_acc/eps0.1": 0.53, "test/fgsm_acc/eps0.2": 0.611})
    fgsm_trained.update(_last(**{"test/fgsm_acc/eps0.3": 0.97, "test/pgd_acc": 0.0}))
    assert any("rises with eps" in f for f in masking_flags(fgsm_trained))
    # The briefly PGD-trained classifier: 84.8% under PGD-40, 49% under AutoAttack.
    pgd_trained = _last(**{"test/pgd_acc": 0.848, "test/aa_acc": 0.49})
    assert masking_flags(pgd_trained) == ["test: aa_acc 49% more than 5 points below PGD 85%"]
    # PGD above FGSM at the PGD eps.
    odd = _last(**{"val/fgsm_acc/eps0.3": 0.2, "val/pgd_acc": 0.5})
    assert masking_flags(odd) == ["val: PGD 50% above FGSM 20% at eps 0.3"]
    odd_apgd = _last(**{"val/fgsm_acc/eps0.3": 0.2, "val/apgd_acc": 0.3})
    assert masking_flags(odd_apgd) == ["val: APGD 30% above FGSM 20% at eps 0.3"]
    # docs/RESULTS.md's PGD-trained Classic Classifier: consistent numbers, no flag.
    honest = _last(**{"test/fgsm_acc/eps0.1": 0.932, "test/fgsm_acc/eps0.2": 0.882})
    honest.update(_last(**{"test/fgsm_acc/eps0.3": 0.826, "test/pgd_acc": 0.767, "test/aa_acc": 0.74}))
    assert masking_flags(honest) == []


def test_flagged_trials_show_in_the_results(tmp_path):
    from orchestrator.results import ResultsStore, load_results

    flagged = _row(
        "masked", "TERMINATED", 3, **{"val/acc": 0.97, "val/fgsm_acc/eps0.3": 0.1, "val/pgd_acc": 0.6}
    )
    clean = _row("fine", "TERMINATED", 3, **{"val/acc": 0.97, "val/fgsm_acc/eps0.3": 0.7, "val/pgd_acc": 0.6})
    experiment = Location.parse(tmp_path / "exp")
    ResultsStore(experiment).append([], [flagged, clean], {"objectives": '[["val/pgd_acc", "max"]]'})
    rows = {r["trial_id"]: r for r in load_results(experiment)[0].to_pylist()}
    assert "PGD 60% above FGSM 10%" in rows["masked"]["masking"] and rows["fine"]["masking"] is None
    assert display_columns(list(rows.values()), [("val/pgd_acc", "max")])[-1] == "masking"


def test_gpus_a_local_machine_does_not_have_are_refused_before_ray(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UserError) as info:
        plan_search(_settings(tmp_path, gpus_per_trial=0.3), check_dataset=False)
    assert "this machine has 0 GPU(s)" in info.value.message and "\n" not in info.value.message
    assert not (tmp_path / "x").exists()


def test_a_result_for_a_trial_optuna_already_finished_is_not_a_crash():
    """A trial told PRUNED just before its driver was SIGKILLed can be run again by Ray Tune's
    restore (its saved state still said running); its next result must not end the search."""
    searcher = _searcher(["val/apgd_acc"], ["max"])
    config = searcher.suggest("t1")
    assert config
    searcher.on_trial_result("t1", {"val/apgd_acc": 0.5, "training_iteration": 1, "iteration": 1})
    searcher_study(searcher).tell(optuna_trials(searcher)["t1"], state=TrialState.PRUNED)
    searcher.on_trial_result("t1", {"val/apgd_acc": 0.6, "training_iteration": 2, "iteration": 2})


def test_the_result_asha_stopped_a_trial_on_reaches_the_study():
    """Ray Tune does not pass the result the scheduler says STOP to to the searcher; the study
    still gets it as the pruned trial's last intermediate value (TPE ranks pruned trials by it)."""
    searcher = _searcher(["val/apgd_acc"], ["max"])
    searcher.suggest("stopped")
    searcher.on_trial_result("stopped", {"val/apgd_acc": 0.2, "training_iteration": 1, "iteration": 1})
    # ASHA stops it on its second result: only on_trial_complete sees that one
    last = {"val/apgd_acc": 0.3, "training_iteration": 2, "iteration": 2, "config": {"epochs": 3}}
    searcher.on_trial_complete("stopped", last)
    (trial,) = searcher_study(searcher).trials
    assert trial.state == TrialState.PRUNED and trial.intermediate_values == {1: 0.2, 2: 0.3}


def test_trials_parquet_read_raw_carries_feasibility_and_the_feasible_front(tmp_path):
    """The writer derives feasible and pareto as every reader does: a constrained Pareto search's
    trials.parquet read with plain pyarrow never puts an infeasible trial on the front."""
    import pyarrow.parquet as pq

    from orchestrator.callbacks import ParquetCallback
    from orchestrator.results import ResultsStore, load_results

    objectives = [("val/acc", "max"), ("val/apgd_acc", "max")]
    meta = {"space": "classic", "objectives": [list(o) for o in objectives]}
    meta["constraint"] = {"metric": "val/acc", "min": 0.8}
    writer = ParquetCallback(str(tmp_path), metadata=meta, budget_key="epochs", objectives=objectives)
    for tid, clean, robust in (("a", 0.95, 0.3), ("b", 0.5, 0.6)):
        writer._previous_trials[tid] = {
            "trial_id": tid, "status": "TERMINATED", "outcome": "completed", "iterations": 3,
            "last/val/acc": clean, "last/val/apgd_acc": robust,
        }  # fmt: skip
    ResultsStore(Location.parse(str(tmp_path))).compact(
        writer.metadata(), trials=writer.trial_rows(final=True)
    )
    raw = {r["trial_id"]: r for r in pq.read_table(tmp_path / "trials.parquet").to_pylist()}
    assert (raw["a"]["feasible"], raw["a"]["pareto"]) == (True, True)
    assert (raw["b"]["feasible"], raw["b"]["pareto"]) == (False, False)
    read = {r["trial_id"]: r for r in load_results(Location.parse(str(tmp_path)))[0].to_pylist()}
    assert all(
        read[t]["pareto"] == raw[t]["pareto"] and read[t]["feasible"] == raw[t]["feasible"] for t in raw
    )


def test_one_row_shows_its_searched_configuration_and_final_numbers():
    """`results --top 1`: one row is constant in every column, yet its searched parameters and
    `orchestrator evaluate`'s numbers are what the user asked for."""
    row = {
        "trial_id": "a",
        "outcome": "completed",
        "iterations": 3,
        "last/val/pgd_acc": 0.5,
        "last/test/aa_acc": 0.41,
        "config/lr": 0.01,
        "config/dataset": "mnist",
    }
    columns = display_columns([row], [("val/pgd_acc", "max")], searched=["lr"])
    assert "config/lr" in columns and "last/test/aa_acc" in columns
    assert "config/dataset" not in columns, "fixed for every trial and not searched"
    assert "config/lr" not in display_columns([row], [("val/pgd_acc", "max")])


def _bounded_study(n: int, limit: int = 20, recent: int = 8, best: int = 3, constrained: bool = False):
    import optuna

    from orchestrator.searchers import BoundedHistory

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inner = optuna.samplers.TPESampler(seed=0, multivariate=True, constant_liar=True, n_startup_trials=5)
    sampler = BoundedHistory(inner, limit=limit, recent=recent, best=best)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for i in range(n):
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        if constrained:
            # the first trial is the highest value of all, and infeasible
            trial.set_constraint("c", 1.0 if i == 0 else -1.0)
        study.tell(trial, 10.0 if (constrained and i == 0) else -((x - 0.3) ** 2) + (1.0 if i == 2 else 0.0))
    return study, sampler


def test_tpe_sees_a_bounded_history_with_the_newest_the_best_and_a_spread():
    study, sampler = _bounded_study(60)
    running = study.ask()  # the constant liar's trial
    trials = study.get_trials(deepcopy=False)
    seen = sampler.window(study, trials, None)
    numbers = [t.number for t in seen]
    assert len(seen) <= 20 and len(set(numbers)) == len(numbers)
    assert set(range(61 - 8, 61)) <= set(numbers), "the newest 8, the running trial among them"
    assert running.number in numbers
    assert 2 in numbers, "trial 2 (the study's best, long gone from the newest) stays in view"
    assert min(numbers) < 10, "the older trials are sampled across the whole history"
    short = trials[:15]
    assert sampler.window(study, short, None) is short, "below the limit TPE sees everything"
    study.tell(running, 0.0)
    assert 0.0 <= study.ask().suggest_float("x", 0.0, 1.0) <= 1.0


def test_the_bounded_history_ranks_infeasible_trials_last_and_pickles_small():
    import pickle

    study, sampler = _bounded_study(40, constrained=True)
    sampler.window(study, study.get_trials(deepcopy=False), None)
    assert sampler._best[0][1] == 2, "the infeasible 10.0 is not the best"
    again = pickle.loads(pickle.dumps(sampler))
    assert again._best == [] and again.limit == 20
    with pytest.raises(ValueError, match="under the limit"):
        type(sampler)(sampler.sampler, limit=10, recent=8, best=3)
