"""`orchestrator report` and `orchestrator export` on the experiments of real tiny searches."""

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from orchestrator.cli import cli
from orchestrator.export import load_classifier, preprocess
from orchestrator.report import build_report, load_experiment
from orchestrator.storage import Location
from tests.conftest import SPACE_NAMES
from trainables.data import load_data
from trainables.evaluation import EvalSpec, evaluate

pytestmark = pytest.mark.slow


def _images(markdown: Path) -> list[Path]:
    text = markdown.read_text()
    links = [part.split(")", 1)[0] for part in text.split("](")[1:]]
    return [markdown.parent / link for link in links]


@pytest.mark.parametrize("space", SPACE_NAMES)
def test_report_folder_for_each_space(space_runs, tmp_path, space):
    _, runs = space_runs
    plan, _ = runs[space]
    experiment = load_experiment(plan.experiment)
    md = build_report([experiment], tmp_path)
    images = _images(md)
    assert images and all(p.exists() for p in images), "every linked figure was written"
    for path in images:
        with Image.open(path) as img:
            assert img.width > 300 and img.height > 200
    names = {p.name for p in images}
    assert f"e2e-{space}_objective.png" in names and "noise_grid.png" in names
    text = md.read_text()
    metric = experiment.objectives[0][0]
    done = [t for t in experiment.trials if t["outcome"] == "completed"]
    values = {t.get(f"last/{metric}") for t in done}
    if len(done) < 3:  # two trials (see SPACE_TRIALS)
        assert f"importances need at least 3 finished trials with {metric}" in text
    elif len(values) > 1:
        assert f"e2e-{space}_importance.png" in names, "importances over the three completed trials"
    else:  # tiny trials can all score the same (adaptive_ratio: 0 under PGD after 4 steps)
        assert f"every trial has the same {metric}" in text and "importances are undefined" in text
    assert "| model | clean | gaussian low" in text
    if space == "wgan_gp":
        assert {"e2e-wgan_gp_stage_samples.png", "e2e-wgan_gp_stage_accuracy.png"} <= names
        assert "| Robust Classifier (this trial) |" in text and "| Classic Classifier (reference) |" in text
    if space == "adaptive_ratio":
        assert any(n.endswith("_cycles.png") for n in names)


def test_report_needs_only_the_parquet_files(space_runs, tmp_path):
    _, runs = space_runs
    plan, _ = runs["adaptive_ratio"]
    bare = tmp_path / "store" / "copied"
    bare.mkdir(parents=True)
    for name in ("trials.parquet", "history.parquet"):
        shutil.copy(Path(plan.experiment.path) / name, bare / name)
    result = CliRunner().invoke(cli, ["report", "copied", "--storage", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert (bare / "report" / "report.md").exists()


def test_combined_report_compares_best_trials_on_noise(space_runs, tmp_path):
    root, _ = space_runs
    names = [f"e2e-{s}" for s in SPACE_NAMES]
    result = CliRunner().invoke(
        cli, ["report", *names, "--storage", str(root), "--out", str(tmp_path / "all")]
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "all" / "report.md").read_text()
    for name in names:
        assert f"## {name}" in text
        assert f"| {name} (" in text, "one noise-grid row per experiment"


@pytest.mark.parametrize("fmt", ["state_dict", "exported"])
def test_export_reproduces_the_reported_accuracy(space_runs, tmp_path, fmt):
    root, runs = space_runs
    plan, _ = runs["classic"]
    out = tmp_path / f"model.{fmt}"
    result = CliRunner().invoke(
        cli, ["export", "e2e-classic", "--storage", str(root), "--out", str(out), "--format", fmt]
    )
    assert result.exit_code == 0, result.output
    model, meta = load_classifier(out)
    trials = {
        t["trial_id"]: t for t in pq.read_table(Path(plan.experiment.path) / "trials.parquet").to_pylist()
    }
    trial = trials[meta["trial_id"]]
    assert trial["outcome"] == "completed"
    assert meta["dataset"] == "synthetic" and meta["pixel_range"] == [-1.0, 1.0]
    data = load_data("synthetic", torch.device("cpu"), train_subset=trial["config/train_subset"])
    spec = EvalSpec(fgsm_eps=(), pgd_steps=0, noise=False, apgd_steps=0, clean_n=0)  # test: all images
    assert evaluate(model, data.test, spec, "test")["test/acc"] == pytest.approx(trial["last/test/acc"])


def test_export_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(
        cli, ["export", "nope", "--storage", str(tmp_path), "--out", str(tmp_path / "m.pt")]
    )
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_preprocess_matches_training_scale():
    images = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    x = preprocess(images)
    assert x.shape == (2, 1, 32, 32)
    assert x[:, :, 2:30, 2:30].min() == 1.0 and x[:, :, :2].max() == -1.0
    assert Location.parse("x").uri.endswith("/x")
