"""What the driver costs as a search grows: the same trials through ``orchestrator search`` and
through plain Ray Tune + ``OptunaSearch``, in one run.

Every trial is ``idle`` (``benchmarks/idle_trainable.py``): it sleeps ``--seconds`` per report and
reports a synthetic curve, so the wall time over the ideal (trials x reports x seconds / slots)
is bookkeeping: Ray's, and on the orchestrator's side everything a real search has (Parquet
parts and compaction, the history, the Optuna study in SQLite, the leaderboard, the driver lock,
W&B runs unless ``--wandb disabled``). Each side runs in its own process (its CPU seconds and
peak memory are the driver's) on a private local Ray with ``--cpus`` CPUs, ``--slots`` trials at
a time (each trial asks for cpus/slots CPUs: sleeping trials use none). Ray's own release test
for this (10,000 one-second trials on one 16-vCPU node) allows 800 s against an ideal of 625.

    python benchmarks/driver_scale.py --trials 100 1000 --slots 16 --wandb disabled
    python benchmarks/driver_scale.py --trials 100 --slots 16 --wandb offline

It prints one row per side and size (wall, over ideal, driver CPU per trial, peak RSS, Parquet
bytes, study bytes, W&B files per trial, the time of ``orchestrator results`` and ``report``) and
the orchestrator's wall and CPU over plain Ray Tune's; ``--save`` appends the rows as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cheap_config(args) -> dict:
    from benchmarks.idle_trainable import CHEAP

    return {**CHEAP, "seconds": args.seconds}


def _usage() -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def _folder_bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


def run_plain(args, workdir: Path) -> dict:
    """Plain Ray Tune + OptunaSearch, the same trials (a checkpoint with the last report)."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from benchmarks.idle_space import METRIC

    def trial(config: dict) -> None:
        quality = 1.0 - ((config["x"] - 0.5) ** 2 + (config["y"] - 0.5) ** 2)
        for i in range(1, args.results + 1):
            time.sleep(args.seconds)
            metrics = {METRIC: quality * (1.0 - 0.5 ** (i / args.results)), "iteration": i}
            if i < args.results:
                tune.report(metrics)
                continue
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "state.json").write_text(json.dumps(metrics))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=args.cpus,
        include_dashboard=False,
        object_store_memory=512 * 1024**2,
        logging_level="warning",
    )
    dist = optuna.distributions.FloatDistribution
    searcher = OptunaSearch(space={"x": dist(0, 1), "y": dist(0, 1)}, metric=METRIC, mode="max", seed=0)
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": args.cpus / args.slots}),
        # Workers reused, as the orchestrator does and Ray's own scalability release tests do.
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=args.n, max_concurrent_trials=args.slots, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(workdir), name="plain", verbose=0),
    )
    grid = tuner.fit()
    wall = time.perf_counter() - start
    ray.shutdown()
    assert len(grid) == args.n and not grid.errors, grid.errors
    return {"wall_s": wall, **_usage()}


#: The driver's parts whose seconds the orchestrator's side reports: (module, class, methods).
#: ``tpe`` is the sampler's share of ``searcher`` (suggestions), ``parquet`` the results tables.
COMPONENTS = {
    "searcher": (
        "orchestrator.searchers",
        "BudgetAwareOptunaSearch",
        ("suggest", "on_trial_result", "on_trial_complete"),
    ),
    "tpe": (
        "orchestrator.searchers",
        "BoundedHistory",
        ("infer_relative_search_space", "sample_relative", "sample_independent"),
    ),
    "parquet": (
        "orchestrator.callbacks",
        "ParquetCallback",
        ("setup", "on_trial_result", "on_step_end", "on_trial_complete", "on_experiment_end"),
    ),
    "result_lines": ("orchestrator.callbacks", "ResultLines", ("on_trial_result", "on_trial_complete")),
}


def _timed(seconds: dict[str, float]) -> None:
    """Wrap the :data:`COMPONENTS`' methods so their wall seconds add up in ``seconds``."""
    import functools
    import importlib

    def wrap(name, method):
        @functools.wraps(method)
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                seconds[name] += time.perf_counter() - t

        return timed

    for name, (module, cls_name, methods) in COMPONENTS.items():
        seconds[name] = 0.0
        cls = getattr(importlib.import_module(module), cls_name)
        for method in methods:
            setattr(cls, method, wrap(name, getattr(cls, method)))


def run_orchestrator(args, workdir: Path) -> dict:
    """``orchestrator search`` of the idle space (in process: the driver is this process)."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    import search_spaces
    from benchmarks import idle_space
    from orchestrator.plan import plan_search
    from orchestrator.search import run_search
    from orchestrator.settings import SearchSettings

    search_spaces.register(idle_space.SPACE, idle_space.TRAINABLE)
    name = f"scale-{args.n}"
    seconds: dict[str, float] = {}
    _timed(seconds)
    journal = f"journal://{workdir / name / 'study.log'}" if args.study == "journal" else ""
    settings = SearchSettings(
        space="idle",
        name=name,
        storage=str(workdir),
        config=_cheap_config(args),
        num_samples=args.n,
        max_iterations=args.results,
        scheduler="fifo",
        cpus_per_trial=args.cpus / args.slots,
        max_concurrent=args.slots,
        num_cpus=args.cpus,
        wandb_mode=args.wandb,
        min_clean=0,
        study_storage=journal,
    )
    start = time.perf_counter()
    outcome = run_search(plan_search(settings), echo=lambda line: None)
    wall = time.perf_counter() - start
    experiment = workdir / name
    row = {"wall_s": wall, **_usage(), "trials_done": len(outcome.leaderboard), "errors": outcome.errors}
    row["parquet_bytes"] = _folder_bytes(experiment, "*.parquet")
    row["study_bytes"] = _folder_bytes(experiment, "study.db") + _folder_bytes(experiment, "study.log")
    row["parts_left"] = sum(1 for _ in experiment.rglob("parts/*.parquet"))
    row.update({f"{k}_ms_per_trial": v / args.n * 1000 for k, v in seconds.items()})
    wandb_files = sum(1 for p in experiment.rglob("wandb/**/*") if p.is_file())
    row["wandb_files_per_trial"] = wandb_files / args.n
    row.update(_readers(name, workdir))
    return row


def _cli(*args: str) -> list[str]:
    """The orchestrator's CLI with the idle space registered (as a plugin's entry point would)."""
    return [sys.executable, __file__, "--cli", *args]


def _readers(name: str, workdir: Path) -> dict:
    """Seconds of ``results``, ``report`` and ``resume`` on the finished experiment, and of the
    dashboard until it served its first page and the study's page; None where one failed."""
    out: dict = {}
    for command in ("results", "report", "resume"):
        t = time.perf_counter()
        done = subprocess.run(_cli(command, name, "--storage", str(workdir)), capture_output=True, text=True)
        out[f"{command}_s"] = time.perf_counter() - t if done.returncode == 0 else None
        if done.returncode:
            tail = f"{done.stdout[-1500:]}{done.stderr[-1500:]}"
            print(f"{command}: exit {done.returncode}\n{tail}", file=sys.stderr)
    try:
        out.update(_dashboard_seconds(name, workdir))
    except Exception as exc:  # the search's own numbers are kept
        print(f"dashboard: {exc!r}", file=sys.stderr)
    return out


def _dashboard_seconds(name: str, workdir: Path, timeout: float = 180.0) -> dict:
    """Seconds from ``orchestrator dashboard`` starting to its first page's data (the list of
    studies), and to the study's page (every trial); None where it did not answer."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t = time.perf_counter()
    server = subprocess.Popen(
        _cli("dashboard", name, "--storage", str(workdir), "--port", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/studies"
    out = {"dashboard_s": None, "dashboard_study_s": None}
    try:
        while time.perf_counter() - t < timeout and server.poll() is None:
            try:
                with urllib.request.urlopen(base, timeout=60) as response:
                    study_id = json.loads(response.read())["study_summaries"][0]["study_id"]
            except OSError:
                time.sleep(0.05)
                continue
            out["dashboard_s"] = time.perf_counter() - t
            with urllib.request.urlopen(f"{base}/{study_id}?after=0", timeout=120) as response:
                if json.loads(response.read())["trials"]:
                    out["dashboard_study_s"] = time.perf_counter() - t
            break
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def one(args) -> None:
    with tempfile.TemporaryDirectory(prefix="driver-scale-") as tmp:
        os.environ.setdefault("WANDB_DIR", tmp)
        os.environ.setdefault("WANDB_SILENT", "true")
        row = (run_plain if args.one == "plain" else run_orchestrator)(args, Path(tmp))
    ideal = args.n * args.results * args.seconds / args.slots
    print(json.dumps({"side": args.one, "trials": args.n, "slots": args.slots, "ideal_s": ideal, **row}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, nargs="+", default=[100])
    parser.add_argument("--slots", type=int, default=16, help="trials at a time")
    parser.add_argument("--cpus", type=int, default=min(os.cpu_count() or 1, 16), help="the local Ray's CPUs")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds slept per report")
    parser.add_argument("--results", type=int, default=1, help="reports per trial")
    parser.add_argument("--wandb", default="disabled", choices=("disabled", "offline"))
    parser.add_argument(
        "--study",
        default="sqlite",
        choices=("sqlite", "journal"),
        help="the orchestrator's study: its default SQLite file, or --study-storage journal:///",
    )
    parser.add_argument(
        "--sides", nargs="+", default=["plain", "orchestrator"], choices=("plain", "orchestrator")
    )
    parser.add_argument("--save", help="append the rows to this JSON-lines file")
    parser.add_argument(
        "--figure",
        nargs=2,
        metavar=("ROWS", "PNG"),
        help="plot the orchestrator's cost per trial by component against trials from saved rows",
    )
    parser.add_argument("--one", choices=("plain", "orchestrator"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--cli"]:  # the CLI, with the idle space a plugin would register
        import search_spaces
        from benchmarks import idle_space
        from orchestrator.cli import main as cli_main

        search_spaces.register(idle_space.SPACE, idle_space.TRAINABLE)
        sys.argv = ["orchestrator", *sys.argv[2:]]
        cli_main()
        return
    args = parser.parse_args()
    if args.figure:
        figure(args.figure[0], args.figure[1])
        return
    if args.one:
        one(args)
        return
    if args.slots < 1 or args.seconds < 0 or args.results < 1 or min(args.trials) < 1:
        parser.error("--slots, --results and --trials are at least 1, --seconds at least 0")
    fits = _slots_that_fit()
    if args.slots > fits:
        parser.error(f"--slots {args.slots}: this machine's free memory holds about {fits} trial workers")
    rows = []
    for n in args.trials:
        for side in args.sides:
            command = [sys.executable, __file__, "--one", side, "--n", str(n)]
            for flag in ("slots", "cpus", "seconds", "results", "wandb", "study"):
                command += [f"--{flag}", str(getattr(args, flag))]
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith('{"side"')]
            if done.returncode or not lines:
                print(f"{side} x {n}: failed\n{done.stdout[-2000:]}{done.stderr[-3000:]}", file=sys.stderr)
                sys.exit(1)
            row = {
                **json.loads(lines[-1]),
                "wandb": args.wandb,
                "study": args.study if side == "orchestrator" else "memory",
                "seconds": args.seconds,
                "results": args.results,
            }
            rows.append(row)
            print(_line(row), flush=True)
            if args.save:
                with open(args.save, "a") as f:
                    f.write(json.dumps(row) + "\n")
        by_side = {r["side"]: r for r in rows if r["trials"] == n}
        if {"plain", "orchestrator"} <= set(by_side):
            o, p = by_side["orchestrator"], by_side["plain"]
            print(
                f"  {n} trials: orchestrator / plain Ray Tune: wall {o['wall_s'] / p['wall_s']:.2f}x, "
                f"driver CPU {o['cpu_s'] / p['cpu_s']:.2f}x",
                flush=True,
            )


#: Resident memory of one trial worker (Ray's worker process with torch imported), measured here.
WORKER_MB = 450


def _slots_that_fit() -> int:
    """Trial workers the machine's available memory holds (with 2 GB left for Ray and the driver)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available_mb = int(fields["MemAvailable"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return 1 << 30
    return max(int((available_mb - 2048) / WORKER_MB), 1)


def figure(rows_file: str, png: str) -> None:
    """Each component's driver milliseconds per trial, and the driver's CPU per trial, against the
    number of trials (the orchestrator's rows of ``rows_file``, the newest per size and study)."""
    from orchestrator.figures import plt_module

    rows = [json.loads(line) for line in Path(rows_file).read_text().splitlines() if line.strip()]
    newest = {(r["trials"], r.get("study", "sqlite")): r for r in rows if r["side"] == "orchestrator"}
    plt = plt_module()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for study in sorted({k[1] for k in newest}):
        sizes = sorted(n for n, s in newest if s == study)
        if not all(f"{c}_ms_per_trial" in newest[(n, study)] for n in sizes for c in COMPONENTS):
            continue
        cpu = [newest[(n, study)]["cpu_s"] / n * 1000 for n in sizes]
        ax.plot(sizes, cpu, "k-o", label=f"driver CPU, all ({study} study)")
        for component in COMPONENTS:
            ms = [newest[(n, study)][f"{component}_ms_per_trial"] for n in sizes]
            ax.plot(sizes, ms, "-o", label=f"{component} ({study})")
    ax.set_xscale("log")
    ax.set_xlabel("trials in the search (one-second trials, 16 at a time)")
    ax.set_ylabel("driver ms per trial")
    ax.set_title("What the driver spends per trial as the search grows (2-core CPU)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    print(f"wrote {png}")


#: The readers timed on the finished experiment (``_readers``).
READERS = ("results", "report", "resume", "dashboard", "dashboard_study")


def _line(r: dict) -> str:
    extra = ""
    if r["side"] == "orchestrator":
        readers = "".join(f"  {k} {r.get(f'{k}_s') or float('nan'):.1f} s" for k in READERS)
        parts = "  ".join(f"{k} {r[f'{k}_ms_per_trial']:.1f}" for k in COMPONENTS)
        extra = (
            f"  parquet {r['parquet_bytes'] / 1e6:.1f} MB  study {r['study_bytes'] / 1e6:.1f} MB"
            f"  W&B files/trial {r['wandb_files_per_trial']:.1f}\n{'':14}readers:{readers}"
            f"\n{'':14}ms per trial: {parts}"
        )
    return (
        f"{r['side']:>12} {r['trials']:>6} trials x {r['slots']} slots: wall {r['wall_s']:7.1f} s "
        f"(ideal {r['ideal_s']:.0f} s, {r['wall_s'] / max(r['ideal_s'], 1e-9):.2f}x)  driver CPU "
        f"{r['cpu_s'] / r['trials'] * 1000:.0f} ms/trial  peak {r['peak_rss_mb']:.0f} MB{extra}"
    )


if __name__ == "__main__":
    main()
