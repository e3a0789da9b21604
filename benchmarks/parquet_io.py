"""How many bytes the Parquet writer puts on disk over a search, against a rewrite-everything
writer (what the project did before: both tables rewritten at every flush).

    python benchmarks/parquet_io.py            # 25 .. 200 short trials, 5 reports each

The search is simulated: ``orchestrator.callbacks.ParquetCallback`` receives Ray Tune's
callback calls (a result per report, a completion per trial, flushing at every event as a
search with many short trials does) from stand-in trials, and every byte written through the
experiment's storage is counted. A report carries ~40 scalar metrics, like a real trial's.
Prints bytes per report: constant for a writer whose I/O grows linearly with the number of
reports.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orchestrator.results as results  # noqa: E402
import orchestrator.trial_rows as trial_rows  # noqa: E402
from orchestrator.callbacks import ParquetCallback  # noqa: E402
from orchestrator.results import PARTS_DIR, to_table, write_table  # noqa: E402
from orchestrator.storage import Location  # noqa: E402

META = {
    "space": "classic",
    "trainable": "classic",
    "budget_key": "epochs",
    "unit": "epoch",
    "objectives": [["val/acc", "max"]],
}
WRITTEN = [0]


class Counting(Location):
    def write_bytes(self, data: bytes) -> None:
        WRITTEN[0] += len(data)
        super().write_bytes(data)

    def child(self, *parts):
        loc = super().child(*parts)
        return Counting(loc.fs, loc.path, loc.uri)


def _counting_store(self, experiment):
    experiment = Counting(experiment.fs, experiment.path, experiment.uri)
    self.experiment, self.parts, self._seq = experiment, experiment.child(PARTS_DIR), None


class Trial:
    def __init__(self, i: int, budget: int):
        self.trial_id, self.status, self.num_failures, self.error_file = f"t{i:05d}", "RUNNING", 0, None
        self.config = {"lr": 1e-3 * (1 + i % 7), "epochs": budget, "batch_size": 128}
        self.checkpoint = None


def report(i: int, it: int) -> dict:
    metrics = {f"val/noise_acc/{k}/{lvl}": 0.5 for k in ("a", "b", "c") for lvl in ("x", "y", "z")}
    metrics.update({f"val/m{j}": 0.01 * j + 0.001 * i for j in range(30)})
    return {
        "iteration": it,
        "training_iteration": it,
        "val/acc": 0.1 * (i % 10),
        "time_total_s": 1.0 * it,
        **metrics,
    }


def simulate(root: Path, n_trials: int, reports: int, rewrite_all: bool) -> int:
    WRITTEN[0] = 0
    experiment = root / f"{'all' if rewrite_all else 'parts'}-{n_trials}"
    callback = ParquetCallback(
        str(experiment), metadata=META, budget_key="epochs", objectives=[("val/acc", "max")], flush_s=0
    )
    everything: list[dict] = []
    trials = []
    for i in range(n_trials):
        trial = Trial(i, reports)
        trials.append(trial)
        for it in range(1, reports + 1):
            result = report(i, it)
            if rewrite_all:  # the previous writer: both tables rewritten whole at every flush
                everything.append(trial_rows.history_row(trial.trial_id, result))
                loc = Counting.parse(experiment)
                write_table(
                    to_table(everything), Counting(loc.fs, loc.path, loc.uri).child("history.parquet")
                )
                rows = [{"trial_id": t.trial_id, **t.config} for t in trials]
                write_table(to_table(rows), Counting(loc.fs, loc.path, loc.uri).child("trials.parquet"))
            else:
                callback.on_trial_result(it, trials, trial, result)
        trial.status = "TERMINATED"
        if not rewrite_all:
            callback.on_trial_complete(reports, trials, trial)
    if not rewrite_all:
        callback.on_experiment_end(trials)
    return WRITTEN[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", default="25,50,100,200")
    parser.add_argument("--reports", type=int, default=5)
    args = parser.parse_args()
    results.ResultsStore.__init__ = _counting_store
    print(
        f"{'trials':>7} {'reports':>8} {'parts writer MB':>16} {'bytes/report':>13} "
        f"{'rewrite-all MB':>15} {'bytes/report':>13}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.trials.split(",")):
            reports = n * args.reports
            parts = simulate(Path(tmp), n, args.reports, rewrite_all=False)
            whole = simulate(Path(tmp), n, args.reports, rewrite_all=True)
            print(
                f"{n:>7} {reports:>8} {parts / 1e6:>16.2f} {parts / reports:>13.0f} "
                f"{whole / 1e6:>15.2f} {whole / reports:>13.0f}"
            )


if __name__ == "__main__":
    main()
