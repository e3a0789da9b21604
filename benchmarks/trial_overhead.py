"""What a trial costs beyond its training: the same search of short trials with a new Ray worker
per trial (Ray Tune's default) and with a finished trial's worker running the next one (what
``orchestrator search`` does, ``orchestrator.tuner.REUSE_WORKERS``), in one run.

    python benchmarks/trial_overhead.py                # 6 tiny classic trials, 2 iterations
    python benchmarks/trial_overhead.py --trials 12 --repeats 2

A tiny trial trains for about a second; a new worker first imports torch (and ``torch._dynamo``,
which the first optimiser pulls in) and Ray Tune, several seconds of CPU. Prints each variant's
wall time and the ratio; W&B is disabled so that only the trial's own process is compared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orchestrator.tuner as tuner  # noqa: E402
from orchestrator import ray_runtime  # noqa: E402
from orchestrator.plan import plan_search  # noqa: E402
from orchestrator.search import run_search  # noqa: E402
from orchestrator.settings import SearchSettings  # noqa: E402
from trainables.catalog import smoke_config  # noqa: E402


def one_search(storage: str, name: str, trials: int, reuse: bool) -> float:
    tuner.REUSE_WORKERS = reuse
    settings = SearchSettings(
        space="classic",
        name=name,
        storage=storage,
        config=smoke_config("classic"),
        wandb_mode="disabled",
        num_samples=trials,
        max_iterations=2,
        scheduler="fifo",
    )
    start = time.perf_counter()
    run_search(plan_search(settings), echo=lambda line: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = ray_runtime.start(None, ray_runtime.worker_env("disabled"), num_cpus=os.cpu_count() or 2)
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        with tempfile.TemporaryDirectory() as storage:
            for r in range(args.repeats):
                for reuse in (False, True):  # alternated, so that neither gets a warmer machine
                    times[reuse].append(one_search(storage, f"r{r}-{int(reuse)}", args.trials, reuse))
    finally:
        ray_runtime.stop(started)
    new, reused = min(times[False]), min(times[True])
    cpus = os.cpu_count()
    print(f"{args.trials} tiny classic trials x 2 iterations on {cpus} CPU(s), best of {args.repeats}:")
    print(f"  a new worker per trial     {new:6.1f} s  ({new / args.trials:.2f} s per trial)")
    print(f"  workers reused (default)   {reused:6.1f} s  ({reused / args.trials:.2f} s per trial)")
    print(f"  ratio new / reused         {new / reused:6.2f}")


if __name__ == "__main__":
    main()
