"""A real search under --time-budget: its trials end themselves before the deadline, tested and
checkpointed, and the search ends with it."""

import time

import pyarrow.parquet as pq
import pytest

from search_spaces import SPACES

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("rung_unit", ["iterations", "seconds"])
def test_a_search_ends_at_its_deadline_with_a_tested_model(local_ray, tmp_path, monkeypatch, rung_unit):
    import dataclasses

    import orchestrator.plan_checks as plan_checks
    from orchestrator.plan import plan_search
    from orchestrator.search import run_search
    from tests import rung_toy
    from trainables import catalog

    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))
    monkeypatch.setitem(SPACES, rung_toy.NAME, rung_toy.register())
    monkeypatch.setattr(plan_checks, "MIN_TIME_BUDGET_S", 5.0)  # a short budget for the test
    settings = dataclasses.replace(
        rung_toy.settings(str(tmp_path), "budget"),
        time_budget_s=15.0,
        max_concurrent=2,
        wandb_mode="disabled",
        rung_unit=rung_unit,
    )
    plan = plan_search(settings)
    assert plan.max_iterations == 100, "the cap is the trainable's largest budget (passes <= 100)"
    lines = []
    start = time.monotonic()
    outcome = run_search(plan, echo=lines.append)
    took = time.monotonic() - start
    assert any(line.startswith("time budget: ") for line in lines), lines
    trials = pq.read_table(tmp_path / "budget" / "trials.parquet").to_pylist()
    best = outcome.leaderboard[0]
    # The prior with the best score trained until the deadline, then ended itself with its test
    # evaluation and final checkpoint: completed, not cut off.
    assert best["config/score"] == 0.9 and best["outcome"] == "completed", best
    # (how many passes fit depends on the machine's load: at least one)
    assert 1 <= best["iterations"] < 100 and best["last/deadline_end"] == 1
    assert "last/test/acc" in best and best["checkpoint_path"] and best["train_time_s"] > 0
    assert all(t["outcome"] in ("completed", "early_stopped") for t in trials), trials
    assert took < 15.0 + 60.0, f"the search ran {took:.0f} s past a 15 s budget"
    # Every report carries the trial's clock, rising; with rungs in seconds (1, 3 and 9 s of a
    # 15 s budget) ASHA and the trials' fresh robust validation count it.
    history = pq.read_table(tmp_path / "budget" / "history.parquet").to_pylist()
    for tid in {h["trial_id"] for h in history}:
        clock = [
            h["time/trial_s"] for h in sorted(history, key=lambda h: h["iteration"]) if h["trial_id"] == tid
        ]
        assert clock == sorted(clock) and clock[0] > 0, (tid, clock)
    assert plan.rungs[3] == ((1, 3, 9) if rung_unit == "seconds" else (1, 3, 9, 27, 81))
    key = "robust_rungs_s" if rung_unit == "seconds" else "robust_rungs"
    assert plan.trial_config[key] == plan.rungs[3]
