"""What does searching add? Methods at the same wall-clock budget, each returning one classifier.

    python benchmarks/search_value.py run --data-dir ../shared/data --budget 30m --seeds 0 1
    python benchmarks/search_value.py evaluate -n 1000          # the strong attacks, per model
                                                                 # (writes its record: commit it)
    python benchmarks/search_value.py render --doc docs/SEARCH_VALUE.md   # table + anytime figure

Every method is one ``orchestrator search`` of the same space with the same ``--time-budget``
(the trials end themselves before the deadline with their test evaluation, see
``orchestrator.time_budget``), run one after the other as a new user would run them:

  prior    the space's prior (its known-good recipe) as the only trial, with every core, trained
           for the whole budget (``-n 1 --cpus-per-trial <all>``);
  random   random search + ASHA, no priors;
  tpe      TPE + ASHA, no priors (what ``orchestrator search`` did before priors);
  default  ``orchestrator search`` as it is: priors first, TPE + ASHA, the deadline;
  seconds  the default with ASHA's rungs in a trial's seconds (``--rung-unit seconds``: 1/60,
           3/60, 9/60 and 27/60 of the budget) instead of its cycles.

Each search returns its leaderboard's best trial (feasible first, by the validation objective;
the test split is never used to choose). ``evaluate`` attacks that classifier with
``orchestrator evaluate --attack autoattack`` (ART's APGD-CE, APGD-T, Square, per image the worst;
eps 0.3 on the [0, 1] pixel scale) on ``-n`` test images; ``render`` writes the table (clean,
the worst of the three attacks with a 95% Wilson interval, the model's own ``test/apgd_acc``
and, where the trial ran it, ``test/apgd_square_acc`` (APGD, then Square), training seconds),
a second table of the means over seeds with the default's lead over each method, and one
figure per budget: the best-so-far validation objective against wall time, one line per run.
Runs land in ``--out`` (nothing there is run or judged again); every judged run also leaves
a record in ``benchmarks/results/search_value/`` that is committed, so that runs of different
sessions add up into one table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: One JSON per judged run (its row, its judge's numbers, its anytime curve), committed.
RECORDS = ROOT / "benchmarks" / "results" / "search_value"

#: Flags of each method on top of the shared ones (``{cpus}``: the machine's cores).
METHODS = {
    "prior": ["-n", "1", "--max-concurrent", "1", "--cpus-per-trial", "{cpus}"],
    "random": ["--searcher", "random", "--no-priors", "-n", "64"],
    "tpe": ["--no-priors", "-n", "64"],
    "default": ["-n", "64"],
    "seconds": ["-n", "64", "--rung-unit", "seconds"],
}
#: The CPU settings of the README's main job (shorter cycles, cheaper learned attacker).
CPU_FLAGS = [
    "--train-subset", "10000", "-s", "cycle_steps=25", "-s", "batch_size=64", "-s", "adv_copies=1",
    "--range", "gen_steps=1:5", "-s", "test_robust_n=500",
]  # fmt: skip


def _name(method: str, budget_s: float, seed: int) -> str:
    return f"{method}-{int(budget_s)}s-seed{seed}"


def _orchestrator(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]


def run(args) -> None:
    runs = Path(args.out) / "runs"
    cpus = str(os.cpu_count() or 1)
    for seed in args.seeds:
        for method in args.methods:
            name = _name(method, args.budget_s, seed)
            if (runs / name / "trials.parquet").exists():
                print(f"{name}: done already", flush=True)
                continue
            flags = [f.format(cpus=cpus) for f in METHODS[method]]
            cmd = _orchestrator(
                "search", "--space", args.space, "--name", name, "--storage", str(runs),
                "--time-budget", f"{args.budget_s:g}", "--seed", str(seed), "-s", f"seed={seed}",
                "--data-dir", args.data_dir, "--wandb-mode", "disabled", "--top", "3",
                *(CPU_FLAGS if args.cpu_flags else []), *flags,
            )  # fmt: skip
            print(f"{name}: {' '.join(cmd[3:])}", flush=True)
            (Path(args.out) / f"{name}.commit").write_text(f"{_commit()}\n")  # the code it ran
            t0 = time.time()
            with open(Path(args.out) / f"{name}.log", "w") as log:
                code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            print(f"{name}: exit {code} after {time.time() - t0:.0f} s", flush=True)


def evaluate(args) -> None:
    for run_dir in sorted((Path(args.out) / "runs").glob("*/trials.parquet")):
        name = run_dir.parent.name
        target = Path(args.out) / f"{name}.eval.json"
        if target.exists():
            continue
        cmd = _orchestrator(
            "evaluate", name, "--storage", str(run_dir.parent.parent), "--attack", "autoattack",
            "-n", str(args.images), "--data-dir", args.data_dir, "--json",
        )  # fmt: skip
        log = Path(args.out) / f"{name}.eval.log"
        print(f"{name}: evaluating on {args.images} test images (progress in {log})", flush=True)
        with open(log, "w") as progress:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=progress, text=True, cwd=ROOT)
        if out.returncode:
            print(log.read_text()[-2000:], flush=True)
            continue
        target.write_text(out.stdout.strip().splitlines()[-1])
        record = Path(args.records) / f"{name}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(summarise(Path(args.out), name), indent=1, default=str) + "\n")
        print(f"{name}: judged; its record is {record} (commit it)", flush=True)


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion ``p`` measured on ``n`` images."""
    if n <= 0:
        return (math.nan, math.nan)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def anytime(history: list[dict], objective: str, start: float, min_clean: float | None) -> list[tuple]:
    """(seconds since start, best validation objective so far) at every report; a report below
    the clean-accuracy constraint does not count (it could not be returned)."""
    best, points = -math.inf, []
    for row in sorted(history, key=lambda r: r.get("timestamp") or 0):
        value = row.get(objective)
        if value is None or (min_clean is not None and (row.get("val/acc") or 0.0) < min_clean):
            continue
        best = max(best, float(value))
        points.append((float(row["timestamp"]) - start, best))
    return points


def summarise(out: Path, name: str) -> dict:
    """Run ``name``'s record: the returned model's table row, its judge's numbers (if
    evaluated) and the run's anytime curve, from the run directory under ``out``."""
    from orchestrator.leaderboard import leaderboard
    from orchestrator.results import load_results, table_metadata
    from orchestrator.settings import load_settings
    from orchestrator.storage import Location

    runs = out / "runs"
    method, budget, seed = name.rsplit("-", 2)
    trials, history = load_results(Location.parse(str(runs / name)))
    meta = table_metadata(trials)
    objectives = [tuple(o) for o in meta["objectives"]]
    best = leaderboard(trials.to_pylist(), objectives)[0]
    settings = load_settings(name, str(runs))
    rows = history.to_pylist()
    started = min(float(r["timestamp"]) - float(r.get("time_total_s") or 0) for r in rows)
    constraint = meta.get("constraint") or {}
    evaluation = out / f"{name}.eval.json"
    ran_on = out / f"{name}.commit"
    ev = json.loads(evaluation.read_text()) if evaluation.exists() else {}
    return {
        "name": name,
        "method": method,
        "budget": budget,
        "seed": seed,
        "trials": len(trials),
        "best": best["trial_id"],
        "config": {k[len("config/") :]: v for k, v in best.items() if k.startswith("config/")},
        "objective": best.get(f"last/{objectives[0][0]}"),
        "own_test_apgd": best.get("last/test/apgd_acc"),
        "own_test_apgd_square": best.get("last/test/apgd_square_acc"),
        "train_s": best.get("train_time_s"),
        "iterations": best.get("iterations"),
        "time_budget_s": settings.get("time_budget_s"),
        "clean": ev.get("clean"),
        "worst": ev.get("autoattack_acc"),
        "n": ev.get("n"),
        "evaluation": ev or None,
        "curve": anytime(rows, objectives[0][0], started, constraint.get("min")),
        "commit": ran_on.read_text().strip() if ran_on.exists() else _commit(),
    }


def _commit() -> str | None:
    """The checkout's commit, with ``+changes`` when its tracked files differ from it."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], capture_output=True, cwd=ROOT).returncode
    return (out.stdout.strip() + ("+changes" if dirty else "")) or None


def collect(out: Path, records: Path) -> list[dict]:
    """Every run's record: the committed ones under ``records`` (written there for every run in
    ``out`` that has been judged, so that runs of different sessions add up) and, for runs not
    judged yet, their live summary."""
    records.mkdir(parents=True, exist_ok=True)
    live = []
    for trials_file in sorted((out / "runs").glob("*/trials.parquet")):
        target = records / f"{trials_file.parent.name}.json"
        if target.exists():  # written when it was judged, with the commit it ran on: kept as is
            continue
        row = summarise(out, trials_file.parent.name)
        if row["worst"] is not None:
            target.write_text(json.dumps(row, indent=1, default=str) + "\n")
        else:
            live.append(row)
    return [*(json.loads(p.read_text()) for p in sorted(records.glob("*.json"))), *live]


def _order(row: dict) -> tuple:
    return (_seconds(row["budget"]), list(METHODS).index(row["method"]), row["seed"])


def _seconds(budget: str) -> float:
    return float(budget.rstrip("s"))


def runs_table(rows: list[dict]) -> str:
    lines = [
        "| method | budget | seed | trials | returned trial (iterations, training s) | val objective | "
        "own test APGD (+ Square) | clean | worst of APGD-CE, APGD-T, Square (95% interval) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=_order):
        worst = "not evaluated"
        if r["worst"] is not None:
            lo, hi = wilson(r["worst"], r["n"])
            worst = f"{100 * r['worst']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}, n={r['n']})"
        lines.append(
            f"| {r['method']} | {r['budget']} | {r['seed']} | {r['trials']} | {r['best']} "
            f"({r['iterations']}, {r['train_s'] or 0:.0f} s) | {_pct(r['objective'])} | "
            f"{_own_test(r)} | {_pct(r['clean'])} | {worst} |"
        )
    return "\n".join(lines)


def _own_test(row: dict) -> str:
    """The returned trial's own test number: APGD, and its worst case with Square where the
    trial ran it (``test/apgd_square_acc``, since 2026-12-06)."""
    strong = row.get("own_test_apgd_square")
    return _pct(row["own_test_apgd"]) + (f" ({_pct(strong)})" if strong is not None else "")


def mean_table(rows: list[dict]) -> str:
    """Per budget and method, over its judged seeds: the mean of the strong-attack accuracy (the
    images of every seed pooled, 95% Wilson interval), the seeds' spread, and the default
    search minus this method with a 95% interval (images pooled; the spread between seeds is
    not in it: with two seeds, read it beside the spread)."""
    judged: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["worst"] is not None:
            judged.setdefault((r["budget"], r["method"]), []).append(r)
    lines = [
        "| budget | method | seeds | mean worst (95% interval) | seeds' spread "
        "| default minus this (95% interval) |",
        "|---|---|---|---|---|---|",
    ]
    for (budget, method), group in sorted(judged.items(), key=lambda kv: _order(kv[1][0])):
        p, n = pooled(group)
        lo, hi = wilson(p, n)
        spread = f"{100 * min(r['worst'] for r in group):.1f}-{100 * max(r['worst'] for r in group):.1f}%"
        diff = "-"
        default = judged.get((budget, "default"))
        if default and method != "default":
            d, dlo, dhi = difference(pooled(default), (p, n))
            diff = f"{100 * d:+.1f} ({100 * dlo:+.1f} to {100 * dhi:+.1f})"
        lines.append(
            f"| {budget} | {method} | {len(group)} | {100 * p:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}, n={n}) "
            f"| {spread} | {diff} |"
        )
    return "\n".join(lines)


def pooled(group: list[dict]) -> tuple[float, int]:
    """The accuracy over every image of ``group``'s runs, and how many images."""
    n = sum(int(r["n"]) for r in group)
    return sum(r["worst"] * int(r["n"]) for r in group) / n, n


def difference(a: tuple[float, int], b: tuple[float, int], z: float = 1.96) -> tuple[float, float, float]:
    """``a`` minus ``b`` (proportion, images) with a 95% normal-approximation interval."""
    (pa, na), (pb, nb) = a, b
    d = pa - pb
    half = z * math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    return d, d - half, d + half


def render(args) -> None:
    out, records = Path(args.out), Path(args.records)
    rows = collect(out, records)
    table, means = runs_table(rows), mean_table(rows)
    print(table, means, sep="\n\n")
    figures = []
    for budget in sorted({r["budget"] for r in rows}, key=_seconds):
        curves = {}
        for r in sorted(rows, key=_order):
            if r["budget"] == budget and r.get("curve"):
                curves.setdefault((r["method"], budget), []).append(r["curve"])
        if curves:
            figure = out / f"search_value_{budget}.png"
            _figure(curves, figure)
            figures.append((budget, figure))
    if args.doc:
        doc = Path(args.doc)
        (doc.parent / "figures").mkdir(parents=True, exist_ok=True)
        for _, figure in figures:
            (doc.parent / "figures" / figure.name).write_bytes(figure.read_bytes())
        images = [
            f"![anytime, {budget}](figures/search_value_{budget}.png)"
            for budget in sorted({r["budget"] for r in rows}, key=_seconds)
            if (doc.parent / "figures" / f"search_value_{budget}.png").exists()
        ]
        start, end = "<!-- search_value:start -->", "<!-- search_value:end -->"
        text = doc.read_text() if doc.exists() else f"{start}\n{end}\n"
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        body = "\n\n".join([table, means, *images])
        doc.write_text(f"{head}{start}\n{body}\n{end}{tail}")


def _pct(value) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def _figure(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (method, budget), runs in sorted(curves.items()):
        for i, curve in enumerate(runs):
            if curve:
                xs, ys = zip(*curve)
                label = f"{method} ({budget})" if i == 0 else None
                ax.step([x / 60 for x in xs], ys, where="post", label=label, alpha=0.8)
    ax.set_xlabel("wall time since the first trial started (min)")
    ax.set_ylabel("best validation objective so far")
    ax.set_title("Best-so-far validation objective, one line per run")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("run", "evaluate", "render"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "search_value"))
    parser.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR", ""))
    parser.add_argument("--space", default="adaptive_ratio")
    parser.add_argument("--budget", default="30m", help="wall-clock budget per method: 600, 30m, 1h")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        "--no-cpu-flags", dest="cpu_flags", action="store_false", help="full-size trials (GPU)"
    )
    parser.add_argument("-n", "--images", type=int, default=1000, help="test images the strong attacks use")
    parser.add_argument("--doc", help="Markdown file to write the table and figure into")
    parser.add_argument(
        "--records", default=str(RECORDS), help="one JSON per judged run, committed: sessions add up"
    )
    args = parser.parse_args(argv)
    from orchestrator.cli_common import parse_duration

    args.budget_s = parse_duration(args.budget)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    {"run": run, "evaluate": evaluate, "render": render}[args.command](args)


if __name__ == "__main__":
    main()
