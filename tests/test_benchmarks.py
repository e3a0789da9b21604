"""benchmarks/search_value.py's bookkeeping: committed records add up across sessions into the
table of runs, the per-method means over seeds and the default's lead with an interval."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sv():
    return _load("search_value")


def _record(method: str, seed: int, worst: float, n: int = 1000, budget: str = "3600s") -> dict:
    return {
        "name": f"{method}-{budget}-seed{seed}", "method": method, "budget": budget, "seed": f"seed{seed}",
        "trials": 1, "best": "abc", "objective": 0.7, "own_test_apgd": 0.7, "train_s": 3000.0,
        "iterations": 100, "clean": 0.98, "worst": worst, "n": n,
        "curve": [[10.0, 0.2], [100.0, 0.5 + seed / 10]],
    }  # fmt: skip


def test_render_adds_up_committed_records(sv, tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    runs = [("prior", 0, 0.70), ("prior", 1, 0.74), ("default", 0, 0.75), ("default", 1, 0.77)]
    for method, seed, worst in runs:
        (records / f"{method}-3600s-seed{seed}.json").write_text(json.dumps(_record(method, seed, worst)))
    doc = tmp_path / "docs" / "SEARCH_VALUE.md"
    doc.parent.mkdir()
    doc.write_text("intro\n<!-- search_value:start -->\nold\n<!-- search_value:end -->\noutro\n")
    sv.main(["render", "--out", str(tmp_path / "out"), "--records", str(records), "--doc", str(doc)])
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    # Per-seed rows, then the means: prior 72.0% over 2,000 images, default 76.0%, lead +4.0.
    assert "| prior | 3600s | seed1 | 1 | abc (100, 3000 s) |" in text
    assert "| 3600s | prior | 2 | 72.0% (" in text and "n=2000) | 70.0-74.0% | +4.0 (+1.3 to +6.7) |" in text
    assert "| 3600s | default | 2 | 76.0% (" in text
    assert (doc.parent / "figures" / "search_value_3600s.png").stat().st_size > 0
    assert "![anytime, 3600s](figures/search_value_3600s.png)" in text


def test_intervals(sv):
    lo, hi = sv.wilson(0.67, 1000)
    assert 0.640 < lo < 0.641 and 0.698 < hi < 0.699  # the README job's 67.0% (64.0-69.8)
    d, dlo, dhi = sv.difference((0.76, 2000), (0.72, 2000))
    assert d == pytest.approx(0.04) and dlo == pytest.approx(0.04 - 0.0271, abs=1e-3) and dhi > d


def test_anytime_counts_only_feasible_reports(sv):
    history = [
        {"timestamp": 110.0, "val/apgd_acc": 0.3, "val/acc": 0.97},
        {"timestamp": 120.0, "val/apgd_acc": 0.9, "val/acc": 0.10},  # collapsed: cannot be returned
        {"timestamp": 130.0, "val/apgd_acc": 0.5, "val/acc": 0.98},
        {"timestamp": 140.0, "val/apgd_acc": 0.4, "val/acc": 0.98},
    ]
    assert sv.anytime(history, "val/apgd_acc", 100.0, 0.9) == [(10.0, 0.3), (30.0, 0.5), (40.0, 0.5)]


def test_collect_keeps_a_judged_record(sv, tmp_path, monkeypatch):
    """A record written when its run was judged keeps the commit the run ran on: a later
    ``render`` on another commit neither rewrites it nor re-summarises the run."""
    out, records = tmp_path / "out", tmp_path / "records"
    for name in ("default-3600s-seed0", "prior-3600s-seed0"):
        (out / "runs" / name).mkdir(parents=True)
        (out / "runs" / name / "trials.parquet").write_bytes(b"")
    records.mkdir()
    kept = {**_record("default", 0, 0.857), "commit": "b9978ac"}
    (records / "default-3600s-seed0.json").write_text(json.dumps(kept))
    summarised = []

    def summarise(out_dir, name):
        summarised.append(name)
        return {**_record(name.split("-")[0], 0, 0.849), "commit": "e5df1c4"}

    monkeypatch.setattr(sv, "summarise", summarise)
    rows = sv.collect(out, records)
    assert summarised == ["prior-3600s-seed0"]
    assert json.loads((records / "default-3600s-seed0.json").read_text())["commit"] == "b9978ac"
    assert json.loads((records / "prior-3600s-seed0.json").read_text())["commit"] == "e5df1c4"
    assert sorted(r["name"] for r in rows) == ["default-3600s-seed0", "prior-3600s-seed0"]
