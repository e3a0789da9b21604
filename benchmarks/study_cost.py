"""What the searcher's study costs per trial as a study grows: Optuna's ask and tell, 16 trials
in flight, the orchestrator's TPE (multivariate, grouped, constant liar), for each storage and
with or without the bounded history TPE learns from (``orchestrator.searchers.BoundedHistory``).

    python benchmarks/study_cost.py --trials 3000 --storages memory sqlite journal
    python benchmarks/study_cost.py --trials 10000 --storages journal --history bounded unbounded

It prints the milliseconds per trial over each stretch of the study (up to 100, 300, 1,000,
3,000 and 10,000 trials) and, per run, the best value found (both histories should find about
the same). Everything runs in this process; no Ray.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The stretches reported: trials up to each mark.
MARKS = (100, 300, 1000, 3000, 10000)


def run(storage_kind: str, history: str, n: int, in_flight: int = 16) -> dict:
    import optuna

    from orchestrator.searchers import make_sampler
    from orchestrator.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tempfile.mkdtemp(prefix="study-cost-")
    urls = {"sqlite": f"sqlite:///{folder}/study.db", "journal": f"journal://{folder}/study.log"}
    storage = optuna.storages.InMemoryStorage() if storage_kind == "memory" else None
    storage = storage or open_storage(urls[storage_kind], create=True)
    sampler = make_sampler("tpe", 0, False)
    if history == "unbounded":
        sampler = sampler.sampler  # the TPE sampler BoundedHistory wraps
    study = optuna.create_study(storage=storage, sampler=sampler, direction="maximize", study_name="s")
    running: collections.deque = collections.deque()
    start, marks = time.perf_counter(), {}
    for i in range(n):
        if len(running) >= in_flight:
            trial = running.popleft()
            trial.report(0.5, 1)
            study.tell(trial, -((trial.params["x"] - 0.3) ** 2 + (trial.params["y"] - 0.7) ** 2))
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_float("y", 0.0, 1.0)
        trial.set_user_attr("ray_trial_id", f"t{i}")
        running.append(trial)
        if i + 1 in MARKS or i + 1 == n:
            marks[i + 1] = time.perf_counter() - start
    return {"storage": storage_kind, "history": history, "marks": marks, "best": study.best_value}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument(
        "--storages",
        nargs="+",
        default=["memory", "sqlite", "journal"],
        choices=("memory", "sqlite", "journal"),
    )
    parser.add_argument("--history", nargs="+", default=["bounded"], choices=("bounded", "unbounded"))
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials is at least 1")
    for storage in args.storages:
        for history in args.history:
            row = run(storage, history, args.trials)
            before, stretches = (0, 0.0), []
            for mark, seconds in row["marks"].items():
                per = (seconds - before[1]) / (mark - before[0]) * 1000
                stretches.append(f"{before[0]}-{mark}: {per:.1f}")
                before = (mark, seconds)
            print(
                f"{storage:>8} {history:>9}  ms per trial  "
                + "  ".join(stretches)
                + f"  (best {row['best']:.2e})",
                flush=True,
            )


if __name__ == "__main__":
    main()
