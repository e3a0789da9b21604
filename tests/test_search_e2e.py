"""Real searches: real Ray Tune, real Optuna, real W&B offline files, real Parquet."""

import glob
import pickle
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from search_spaces import SPACES, Objective, SpaceSpec
from search_spaces.introspect import distributions_for
from tests.conftest import FAKE_WANDB_KEY, SPACE_NAMES, SPACE_TRIALS, search
from tests.wandb_records import summarize

pytestmark = pytest.mark.slow


def optuna_study(experiment: Path):
    path = sorted(experiment.glob("searcher-state-*.pkl"))[-1]
    state = pickle.loads(path.read_bytes())
    return state["_ot_study"], state["_ot_trials"]


@pytest.mark.parametrize("space", SPACE_NAMES)
def test_each_space_runs_a_real_search(space_runs, space):
    _, runs = space_runs
    plan, outcome = runs[space]
    experiment = Path(plan.experiment.path)
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    history = pq.read_table(experiment / "history.parquet").to_pylist()
    n = SPACE_TRIALS[space]
    assert len(trials) == n
    assert all(t["status"] == "TERMINATED" and t["outcome"] == "completed" for t in trials)
    assert len(history) == sum(t["iterations"] for t in trials) == 2 * n, "one history row per report"
    assert {h["trial_id"] for h in history} == {t["trial_id"] for t in trials}
    assert all(t["checkpoint_path"] for t in trials)
    assert all("last/test/acc" in t for t in trials)
    if space == "adaptive_ratio":  # both generator families ran (tests/conftest.py: SPACE_SEEDS)
        assert sorted(t["config/generator"] for t in trials) == ["gradient", "image"]

    # Optuna proposed every configuration, inside the space's ranges.
    study, ot_trials = optuna_study(experiment)
    for t in trials:
        params = study.trials[ot_trials[t["trial_id"]].number].params
        assert params, "the trial's parameters came from the Optuna study"
        config = {k[len("config/") :]: v for k, v in t.items() if k.startswith("config/") and v is not None}
        for name, dist in distributions_for(SPACES[space].space, config).items():
            expected = params[name] if isinstance(params[name], str) else pytest.approx(params[name])
            assert config[name] == expected
            if isinstance(dist, CategoricalDistribution):
                assert config[name] in dist.choices
            else:
                assert dist.low <= config[name] <= dist.high

    # One offline W&B run per trial with its config, metrics and images; no API key anywhere.
    runs = sorted(glob.glob(str(experiment / "*" / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(runs) == n
    for path in runs:
        run = summarize(path)
        trial = next(t for t in trials if t["trial_id"] == run["run"]["id"])
        assert run["run"]["group"] == f"e2e-{space}" and run["run"]["job_type"] == space
        for key, value in trial.items():
            if key.startswith("config/") and value is not None and not isinstance(value, list):
                expected = pytest.approx(value) if isinstance(value, float) else value
                assert run["config"][key[len("config/") :]] == expected
        # The full flat config: defaults the search did not set are there too.
        assert {"batch_size", "seed", "robust_n", "apgd_steps", "pgd_steps"} <= set(run["config"])
        logged = set().union(*run["history"])
        assert {"val/acc", "val/apgd_acc", "time/eval_s", "iteration"} <= logged
        if trial["outcome"] == "completed":
            assert {"test/pgd_acc", "test/apgd_acc"} <= logged, "the test split: PGD-40 and APGD"
        assert any(k.startswith("media/") for k in logged)
        objective = SPACES[space].objective.metric
        assert run["summary"][objective] == {
            "max": pytest.approx(max(h[objective] for h in run["history"] if objective in h))
        }
        assert list(Path(path).parent.glob("files/media/images/**/*.png"))
    for file in Path(experiment).rglob("*"):
        if file.is_file():
            assert FAKE_WANDB_KEY.encode() not in file.read_bytes(), file
    assert outcome.wandb_runs and len(outcome.leaderboard) == n


def good_or_bad(trial):
    """A learning rate that learns (1e-3) or cannot (1e-6)."""
    trial.suggest_categorical("lr", [1e-3, 1e-6])
    return {}


DEMO = SpaceSpec(
    "asha_demo",
    "classic",
    good_or_bad,
    Objective("val/acc", "max"),
    max_iterations=3,
    num_samples=6,
    description="test",
)


def test_pareto_front_holds_only_full_budget_trials(local_ray, tmp_path, monkeypatch):
    monkeypatch.setitem(SPACES, "asha_demo", DEMO)
    plan, outcome = search(
        tmp_path,
        "asha_demo",
        "pareto",
        searcher="random",
        seed=0,
        max_concurrent=1,
        objective="pareto",
        scheduler="asha",
        reduction_factor=2,
        wandb_mode="disabled",
    )
    experiment = Path(plan.experiment.path)
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    assert any(t["outcome"] == "early_stopped" for t in trials), "the multi-objective ASHA stopped trials"
    front = [t for t in trials if t["pareto"]]
    assert front and all(t["outcome"] == "completed" and t["iterations"] == 3 for t in front)
    study, ot_trials = optuna_study(experiment)
    by_tune = {tid: study.trials[ot.number] for tid, ot in ot_trials.items()}
    for t in trials:
        expected = TrialState.PRUNED if t["outcome"] == "early_stopped" else TrialState.COMPLETE
        assert by_tune[t["trial_id"]].state == expected
    from orchestrator.report import build_report, load_experiment

    md = build_report([load_experiment(plan.experiment)], tmp_path / "report")
    assert (tmp_path / "report" / "pareto_pareto.png").exists() and "pareto_pareto.png" in md.read_text()
    optuna_front = {ft.number for ft in study.best_trials}
    assert optuna_front <= {by_tune[t["trial_id"]].number for t in trials if t["outcome"] == "completed"}
    assert outcome.leaderboard[0]["pareto"]


def _plugin_path(tmp_path: Path) -> Path:
    """A folder with an installed package's metadata whose ``orchestrator.spaces`` entry point
    names ``tests.extra_space`` (what ``pip install`` of such a package leaves behind)."""
    site = tmp_path / "site"
    info = site / "orchestrator_extra-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: orchestrator-extra\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[orchestrator.spaces]\nlinear_extra = tests.extra_space\n")
    return site


def test_a_fourth_trainable_through_an_entry_point_reaches_every_command(local_ray, tmp_path):
    import json
    import os
    import subprocess
    import sys

    import ray

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_plugin_path(tmp_path)), str(root)])}

    def orchestrator(*args: str) -> str:
        command = [sys.executable, "-m", "orchestrator.cli", *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    assert "linear_extra: test" in orchestrator("spaces")
    assert "passes" in orchestrator("params", "linear_extra")
    config = {"dataset": "synthetic", "train_subset": 256, "robust_n": 32, "test_robust_n": 32,
              "pgd_steps": 2, "test_apgd_steps": 2, "test_square_queries": 10,
              "noise_eval": False}  # fmt: skip
    sets = [a for k, v in config.items() for a in ("-s", f"{k}={json.dumps(v)}")]
    address = ray.get_runtime_context().gcs_address
    orchestrator("search", "--space", "linear_extra", "--name", "extra", "--storage", str(tmp_path),
                 "-n", "2", "--scheduler", "fifo", "--wandb-mode", "offline", "--address", address,
                 *sets)  # fmt: skip
    experiment = tmp_path / "extra"
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    assert len(trials) == 2 and all(t["outcome"] == "completed" and t["iterations"] == 2 for t in trials)
    assert (experiment / "extra" / "prepared.txt").read_bytes() == b"prepared once"
    assert all(t["config/prepared"].endswith("extra/prepared.txt") for t in trials), "the hook's values"
    assert all("last/train/weight_norm" in t for t in trials)
    assert list(experiment.glob("linear_extra_*")), "trial folders named after the trainable"
    orchestrator("report", "extra", "--storage", str(tmp_path), "--out", str(tmp_path / "report"))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "extra_weight_norm.png" in md and (tmp_path / "report" / "extra_weight_norm.png").exists()
    out = orchestrator("train", "-t", "linear_extra", "--iterations", "1", "-s", "dataset=synthetic",
                       "-s", "noise_eval=false", "-s", "test_apgd_steps=1", "-s", "test_square_queries=5",
                       "--train-subset", "256")  # fmt: skip
    assert "test:" in out
