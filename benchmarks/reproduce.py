"""Reproduce the papers' experiments on MNIST at a 2-core-CPU budget; write docs/RESULTS.md.

    python benchmarks/reproduce.py run seed000 --data-dir ../shared/data   # ~40 min
    python benchmarks/reproduce.py run seed001 --data-dir ../shared/data   # ~1 h
    python benchmarks/reproduce.py render                                  # figures + tables

Every run is an ordinary ``orchestrator search`` of one trial whose searched parameters are all
fixed (``-s NAME=VALUE``), so the numbers, the W&B runs, the Parquet tables and the figures
(``orchestrator report``) come from the same code paths as any search. ``render`` writes the
figures to ``docs/figures/<seed>/`` and regenerates the tables between the ``generated``
markers of ``docs/RESULTS.md`` (the discussion around them is written by hand). Seed 004's noise
grid reuses the models of seeds 000 and 001. A run that already finished is skipped; one that
was interrupted is resumed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.results import load_results
from orchestrator.storage import Location
from search_spaces import wgan_gp as wgan_gp_space
from trainables.metrics import NOISE_AMOUNT, NOISE_LEVELS, describe

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@dataclass(frozen=True)
class Run:
    name: str
    space: str
    iterations: int
    params: dict  # every searched parameter of the space's branch, fixed
    extra: dict = field(default_factory=dict)  # other trainable parameters
    label: str = ""


#: Evaluation budget of every run: PGD-40 / FGSM / noise on 500 validation images per
#: iteration, and on 2,000 test images at the end (the full 10,000 take ~4 min per model here).
EVAL = {"robust_n": 500, "test_robust_n": 2000}
ADAPTIVE = {"cls_lr": 1e-3, "gen_lr": 1e-3, "gen_eps": 0.3, "clean_frac": 0.5}
CLASSIC = {"lr": 1e-3, "batch_size": 128, "weight_decay": 0.0}

EXPERIMENTS: dict[str, list[Run]] = {
    "seed000": [
        Run("repro-000-classic", "classic", 5, {**CLASSIC, "adv_train": "none"}, label="Classic Classifier"),
        Run(
            "repro-000-wgan",
            "wgan_gp",
            4,
            dict(wgan_gp_space.PRIORS[0].params),  # the space's prior: the paper's settings
            {"gen_steps": 150, "stages": "150,300,450,600", "sample_n": 1000},
            label="Robust Classifier (WGAN-GP)",
        ),
    ],
    "seed001": [
        Run(
            "repro-001-ratio2",
            "adaptive_ratio",
            8,
            {**ADAPTIVE, "schedule": "fixed", "k": 2},
            {"cycle_steps": 25},
            label="perturbation GAN, ratio 2:1",
        ),
        Run(
            "repro-001-ratio4",
            "adaptive_ratio",
            8,
            {**ADAPTIVE, "schedule": "fixed", "k": 4},
            {"cycle_steps": 25},
            label="perturbation GAN, ratio 4:1",
        ),
        Run(
            "repro-001-stepped",
            "adaptive_ratio",
            8,
            {**ADAPTIVE, "schedule": "stepped", "k_steps": "1:6,4:8,7:12"},
            {"cycle_steps": 25},
            label="perturbation GAN, stepped 6-8-12",
        ),
        Run(
            "repro-001-adaptive",
            "adaptive_ratio",
            8,
            {**ADAPTIVE, "schedule": "adaptive", "target_gen_loss": 0.6, "k_min": 1, "k_max": 32},
            {"cycle_steps": 25},
            label="perturbation GAN, adaptive (target 0.6)",
        ),
        Run(
            "repro-001-fgsm-at",
            "classic",
            2,
            {**CLASSIC, "adv_train": "fgsm", "adv_eps": 0.3},
            {"adv_weight": 0.5},
            label="Classic, FGSM adversarial training",
        ),
        Run(
            "repro-001-pgd-at",
            "classic",
            1,
            {**CLASSIC, "adv_train": "pgd", "adv_eps": 0.3},
            {"adv_weight": 1.0, "adv_steps": 10},
            label="Classic, PGD adversarial training",
        ),
    ],
}
SEED004 = ["repro-000-classic", "repro-000-wgan", "repro-001-adaptive"]


def storage_default() -> str:
    return os.environ.get("ORCHESTRATOR_STORAGE") or str(Path("~/ray_results/repro").expanduser())


def orchestrator(*args: str, log: Path | None = None) -> int:
    cmd = [sys.executable, "-m", "orchestrator.cli", *args]
    print("$ orchestrator " + " ".join(args), flush=True)
    if log is None:
        return subprocess.run(cmd, cwd=ROOT).returncode
    with open(log, "ab") as f:
        return subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode


def _status(storage: Path, name: str) -> str:
    if not (storage / name / "orchestrator.json").exists():
        return "new"
    with contextlib.suppress(FileNotFoundError):
        rows = load_results(Location.parse(storage / name))[0].to_pylist()
        if rows and all(r["outcome"] == "completed" for r in rows):
            return "done"
    return "interrupted"


def run(seed: str, storage: Path, data_dir: str | None) -> None:
    storage.mkdir(parents=True, exist_ok=True)
    for r in EXPERIMENTS[seed]:
        status = _status(storage, r.name)
        log = storage / f"{r.name}.log"
        start = time.time()
        if status == "done":
            print(f"{r.name}: done already", flush=True)
            continue
        if status == "interrupted":
            code = orchestrator("resume", r.name, "--storage", str(storage), log=log)
        else:
            sets = [a for k, v in {**r.params, **r.extra, **EVAL}.items() for a in ("-s", f"{k}={v}")]
            args = [
                "search",
                "--space",
                r.space,
                "-n",
                "1",
                "--max-iterations",
                str(r.iterations),
                "--scheduler",
                "fifo",
                "--name",
                r.name,
                "--storage",
                str(storage),
                "--wandb-mode",
                "offline",
                "--media-every",
                str(r.iterations),
                # One trial at a time: give it every core (Ray sets its thread count from this).
                "--cpus-per-trial",
                str(os.cpu_count() or 1),
                *sets,
            ]
            if data_dir:
                args += ["--data-dir", data_dir]
            code = orchestrator(*args, log=log)
        print(f"{r.name}: exit {code} after {(time.time() - start) / 60:.1f} min (log {log})", flush=True)
        if code != 0:
            raise SystemExit(code)


def _trial(storage: Path, name: str) -> dict:
    return load_results(Location.parse(storage / name))[0].to_pylist()[0]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def tables(storage: Path) -> str:
    """The generated block of docs/RESULTS.md."""
    out = []
    # Every run with results; ``done``: those that reached their final test evaluation.
    t = {
        r.name: _trial(storage, r.name)
        for runs in EXPERIMENTS.values()
        for r in runs
        if (storage / r.name / "trials.parquet").exists()
    }
    done = {name for name, row in t.items() if row.get("last/test/acc") is not None}
    missing = [r.label for runs in EXPERIMENTS.values() for r in runs if r.name not in done]
    minutes = {name: row["wall_time_s"] / 60 for name, row in t.items()}
    if "repro-000-classic" in done and "repro-000-wgan" in t:
        c, w = t["repro-000-classic"], t["repro-000-wgan"]
        out += [
            "### Seed 000: Classic vs Robust Classifier (MNIST test set, 10,000 images)",
            "",
            "| model | budget | test accuracy | paper | PGD-40 (eps 0.3)* | wall time |",
            "|---|---|---|---|---|---|",
            f"| Classic Classifier | {c['iterations']} epochs | {_pct(c['last/test/acc'])} | 98.7% | "
            f"{_pct(c['last/test/pgd_acc'])} | {minutes['repro-000-classic']:.0f} min |",
            f"| Robust Classifier (WGAN-GP) | {w['iterations'] * w['config/gen_steps']} generator steps | "
            + (
                f"unfinished: validation {_pct(w['last/val/acc'])} | 99.16% | - | "
                if "repro-000-wgan" not in done
                else f"{_pct(w['last/test/acc'])} | 99.16% | {_pct(w['last/test/pgd_acc'])} | "
            )
            + f"{minutes['repro-000-wgan']:.0f} min |",
            "",
        ]
        steps = sorted(
            int(describe(k[len("last/") :]).fields["step"])
            for k in w
            if k.startswith("last/stage/") and k.endswith("/cls_acc") and w[k] is not None
        )
        if steps:
            out += [
                "Generator-stage table: accuracy on 1,000 samples of each generator snapshot (conditioning "
                "labels as the truth). Paper: Robust Classifier 68%, 81%, 90%, ~100% at 1,000-generator-step "
                "intervals of a 30,000-step run.",
                "",
                "| classifier | " + " | ".join(f"step {s}" for s in steps) + " |",
                "|---|" + "---|" * len(steps),
                "| Robust Classifier | "
                + " | ".join(_pct(w[f"last/stage/{s}/cls_acc"]) for s in steps)
                + " |",
                "| Classic Classifier | "
                + " | ".join(_pct(w[f"last/stage/{s}/ref_acc"]) for s in steps)
                + " |",
                "",
                f"Sample quality at the end: Frechet distance {w.get('last/gen/fid', float('nan')):.1f} to "
                "validation images in the reference classifier's feature space (lower is better).",
                "",
            ]
    rows001 = [r for r in EXPERIMENTS["seed001"] if r.name in done]
    if rows001:
        out += [
            "### Seed 001: training-ratio schedules vs adversarial training (MNIST test set)",
            "",
            "| model | budget | clean | FGSM 0.1 | FGSM 0.2 | FGSM 0.3 | PGD-40 0.3* | final k | wall time |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows001:
            row = t[r.name]
            unit = "cycle" if r.space == "adaptive_ratio" else "epoch"
            unit += "" if row["iterations"] == 1 else "s"
            k = row.get("last/ratio/k")
            out.append(
                f"| {r.label} | {row['iterations']} {unit} | {_pct(row['last/test/acc'])} | "
                f"{_pct(row['last/test/fgsm_acc/eps0.1'])} | {_pct(row['last/test/fgsm_acc/eps0.2'])} | "
                f"{_pct(row['last/test/fgsm_acc/eps0.3'])} | {_pct(row['last/test/pgd_acc'])} | "
                f"{'-' if k is None else int(k)} | {minutes[r.name]:.0f} min |"
            )
        out.append("")
    if any(n in done for n in SEED004):
        noise_cells = [(k, lvl) for k, levels in NOISE_LEVELS.items() for lvl in levels]
        out += [
            "### Seed 004: accuracy under noise (MNIST test set, 2,000 images per cell)",
            "",
            "Levels on the [0, 1] pixel scale (`trainables/corruptions.py`): "
            + "; ".join(
                f"{kind} " + NOISE_AMOUNT[kind] + " " + " / ".join(f"{v:g}" for v in levels.values())
                for kind, levels in NOISE_LEVELS.items()
            )
            + " (low / medium / high).",
            "",
            "| model | clean | " + " | ".join(f"{k} {lvl}" for k, lvl in noise_cells) + " |",
            "|---|" + "---|" * (1 + len(noise_cells)),
        ]
        for name in [n for n in SEED004 if n in done]:
            row = t[name]
            cells = [_pct(row["last/test/acc"])] + [
                _pct(row[f"last/test/noise_acc/{k}/{lvl}"]) for k, lvl in noise_cells
            ]
            label = next(r.label for runs in EXPERIMENTS.values() for r in runs if r.name == name)
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    if missing:
        out += ["Not finished in the storage rendered: " + "; ".join(missing) + ".", ""]
    out.append(
        "\\* PGD-40 (eps 0.3, step 0.01, one random start) on 2,000 test images; FGSM and noise on the "
        "same 2,000; clean accuracy on all 10,000. Every eps is on the [0, 1] pixel scale."
    )
    return "\n".join(out)


def render(storage: Path) -> None:
    groups = {
        "seed000": [r.name for r in EXPERIMENTS["seed000"]],
        "seed001": [r.name for r in EXPERIMENTS["seed001"]],
        "seed004": SEED004,
    }
    for seed, names in groups.items():
        names = [n for n in names if (storage / n / "trials.parquet").exists()]
        if names:
            extra = ["--noise-only"] if seed == "seed004" else []
            orchestrator(
                "report",
                *names,
                "--storage",
                str(storage),
                "--out",
                str(DOCS / "figures" / seed),
                "--title",
                f"Reproduction, {seed}",
                *extra,
            )
    results = DOCS / "RESULTS.md"
    text = results.read_text() if results.exists() else "<!-- generated:start -->\n<!-- generated:end -->\n"
    block = f"<!-- generated:start -->\n{tables(storage)}\n<!-- generated:end -->"
    results.write_text(
        re.sub(r"<!-- generated:start -->.*<!-- generated:end -->", lambda _: block, text, flags=re.S)
    )
    print(f"wrote {results} and {DOCS / 'figures'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a seed's experiments")
    p_run.add_argument("seed", choices=[*EXPERIMENTS, "all"])
    p_run.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR"))
    p_run.add_argument("--storage", default=storage_default())
    p_render = sub.add_parser("render", help="figures and tables of docs/RESULTS.md")
    p_render.add_argument("--storage", default=storage_default())
    args = parser.parse_args()
    storage = Path(args.storage).expanduser().resolve()
    if args.command == "run":
        for seed in EXPERIMENTS if args.seed == "all" else [args.seed]:
            run(seed, storage, args.data_dir)
    else:
        render(storage)


if __name__ == "__main__":
    main()
