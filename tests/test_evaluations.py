"""Concurrent writers of evaluations.parquet: every `orchestrator evaluate` keeps its numbers."""

import subprocess
import sys

import pytest

from orchestrator.results import ResultsStore, latest_evaluations, load_results
from orchestrator.storage import Location
from tests.test_orchestrator_layout import ROOT, _experiment_with_checkpoint

SAVE_MANY = """
import sys, time
from orchestrator.results import ResultsStore
from orchestrator.storage import Location
store, writer = ResultsStore(Location.parse(sys.argv[1])), sys.argv[2]
for i in range(int(sys.argv[3])):
    row = {"trial_id": "a", "evaluation_id": f"w{writer}-{i}", "evaluated_at": time.time()}
    store.save_evaluations([{**row, "test/eval_n": 8, "eval_eps": 0.3, "eval_attacks": "pgd"}])
"""


@pytest.mark.slow
def test_writers_racing_on_evaluations_lose_no_row(tmp_path):
    """Three processes each save 10 rows at once: all 30 are in the file (a read-merge-write
    without the file's lease lost rows this way)."""
    experiment = _experiment_with_checkpoint(tmp_path)
    writers = [
        subprocess.Popen([sys.executable, "-c", SAVE_MANY, str(experiment), str(w), "10"], cwd=ROOT)
        for w in range(3)
    ]
    assert [p.wait(120) for p in writers] == [0, 0, 0]
    rows = ResultsStore(Location.parse(experiment)).evaluations()
    assert sorted(r["evaluation_id"] for r in rows) == sorted(
        f"w{w}-{i}" for w in range(3) for i in range(10)
    )
    assert not (experiment / "evaluations.lock").exists()


@pytest.mark.train
def test_two_concurrent_evaluate_commands_both_keep_their_numbers(tmp_path):
    experiment = _experiment_with_checkpoint(tmp_path)
    base = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "evaluate",
        "exp",
        "--storage",
        str(tmp_path),
        "-n",
        "8",
    ]
    runs = [
        subprocess.Popen(
            [*base, "--attack", attack], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for attack in ("pgd", "apgd-ce")
    ]
    for run in runs:
        out = run.communicate(timeout=300)[0].decode()
        assert run.returncode == 0, out[-2000:]
    rows = ResultsStore(Location.parse(experiment)).evaluations()
    assert sorted(r["eval_attacks"] for r in rows) == ["apgd-ce", "pgd"]
    shown = load_results(Location.parse(experiment))[0].to_pylist()[0]
    assert shown["last/test/pgd40_acc"] is not None and shown["last/test/apgd_ce_acc"] is not None


def test_what_a_trial_shows_of_its_evaluations():
    def row(at, n, attacks, **values):
        return {
            "trial_id": "a",
            "evaluated_at": at,
            "test/eval_n": n,
            "eval_eps": 0.3,
            "eval_attacks": attacks,
            **values,
        }

    both = latest_evaluations(
        [
            row(
                1,
                8,
                "pgd,apgd-ce",
                **{"test/pgd40_acc": 0.5, "test/apgd_ce_acc": 0.4, "test/strong_worst_acc": 0.4},
            ),
            row(2, 8, "square", **{"test/square_acc": 0.45}),
        ]
    )["a"]
    assert both["test/pgd40_acc"] == 0.5 and both["test/square_acc"] == 0.45
    assert both["eval_attacks"] == "pgd,apgd-ce,square"
    assert "test/strong_worst_acc" not in both, "the worst case over pgd and apgd-ce only"
    again = latest_evaluations(
        [row(1, 8, "pgd", **{"test/pgd40_acc": 0.5}), row(2, 8, "pgd", **{"test/pgd40_acc": 0.6})]
    )
    assert again["a"]["test/pgd40_acc"] == 0.6 and again["a"]["eval_attacks"] == "pgd"
    other = latest_evaluations(
        [row(1, 8, "pgd", **{"test/pgd40_acc": 0.5}), row(2, 4, "square", **{"test/square_acc": 0.4})]
    )
    assert "test/pgd40_acc" not in other["a"], "other images replace"
