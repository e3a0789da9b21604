"""``orchestrator report``: figures and a Markdown summary from an experiment's Parquet files.

Nothing but ``trials.parquet`` and ``history.parquet`` is read (their schema metadata names the
space, the trainable and the objectives); Ray need not run. For each experiment:

- the objective(s) per trial over iterations, early-stopped and diverged trials marked;
- parameter importances (Optuna's PED-ANOVA evaluator over trials that ran their full budget);
- the Pareto front of clean vs PGD validation accuracy for multi-objective searches;
- ``wgan_gp``: the generator's sample grids per stage and seed 000's stage table (accuracy of
  the trial's classifier and of the reference Classic Classifier on each stage's samples);
- ``adaptive_ratio``: k, generator and classifier loss, and FGSM / PGD accuracy per cycle
  (seed 001's figures);

and, over all the experiments given, seed 004's noise grid: accuracy per noise type and level of
each experiment's best trial.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.results import display_columns, format_rows, leaderboard, load_results, table_metadata
from orchestrator.storage import Location

NOISE_KINDS = ("gaussian", "salt_pepper", "periodic")
NOISE_LEVELS = ("low", "medium", "high")
UNITS = {"classic": "epoch", "wgan_gp": "iteration", "adaptive_ratio": "cycle"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


@dataclass
class Experiment:
    name: str
    uri: str
    trials: list[dict[str, Any]]
    history: list[dict[str, Any]]
    space: str
    trainable: str
    objectives: list[tuple[str, str]]

    @property
    def unit(self) -> str:
        return UNITS.get(self.trainable, "iteration")

    def ranked(self) -> list[dict[str, Any]]:
        return leaderboard(self.trials, self.objectives)

    def best(self) -> dict[str, Any] | None:
        ranked = [t for t in self.ranked() if t["outcome"] == "completed"]
        return ranked[0] if ranked else (self.ranked() or [None])[0]

    def reports(self, trial_id: str) -> list[dict[str, Any]]:
        rows = [r for r in self.history if r["trial_id"] == trial_id]
        return sorted(rows, key=lambda r: r.get("iteration") or 0)


def load_experiment(location: Location) -> Experiment:
    try:
        trials, history = load_results(location)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    meta = table_metadata(trials)
    if "objectives" not in meta:
        raise UserError(
            f"{location.uri}/trials.parquet has no orchestrator metadata (written by an older version?)"
        )
    name = location.uri.rstrip("/").rsplit("/", 1)[-1]
    return Experiment(
        name=name,
        uri=location.uri,
        trials=trials.to_pylist(),
        history=history.to_pylist(),
        space=meta.get("space", "?"),
        trainable=meta.get("trainable", "?"),
        objectives=list(meta["objectives"]),
    )


def _pgd(exp: Experiment | None) -> str:
    """'PGD-40, eps 0.3' from the experiment's config (every eps on the [0, 1] scale)."""
    trial = exp.trials[0] if exp and exp.trials else {}
    return f"PGD-{trial.get('config/pgd_steps') or 40}, eps {trial.get('config/pgd_eps') or 0.3}"


def _label(metric: str, exp: Experiment | None = None) -> str:
    split = "validation" if metric.startswith("val/") else "test"
    if metric.endswith("/pgd_acc"):
        return f"{_pgd(exp)} {split} accuracy"
    if metric.endswith("/acc"):
        return f"clean {split} accuracy"
    if "/fgsm_acc/eps" in metric:
        return f"FGSM {split} accuracy (eps {metric.rsplit('eps', 1)[1]})"
    return metric


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _save(fig, out: Path, name: str) -> str:
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path.name


def objective_curves(exp: Experiment, out: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(exp.objectives), figsize=(5.5 * len(exp.objectives), 3.8), squeeze=False)
    styles = {
        "completed": ("-", "o"),
        "early_stopped": ("--", "x"),
        "diverged": (":", "v"),
        "error": (":", "s"),
    }
    for ax, (metric, mode) in zip(axes[0], exp.objectives):
        for trial in exp.ranked():
            rows = [r for r in exp.reports(trial["trial_id"]) if r.get(metric) is not None]
            if not rows:
                continue
            line, marker = styles.get(trial["outcome"], ("-", "."))
            xs = [r["iteration"] for r in rows]
            ax.plot(
                xs,
                [r[metric] for r in rows],
                line,
                marker=marker,
                markevery=[len(xs) - 1],
                ms=6,
                alpha=0.85,
                label=f"{trial['trial_id']} ({trial['outcome'].replace('_', ' ')})",
            )
        ax.set_title(f"{exp.name}: {metric} ({mode}) per {exp.unit}")
        ax.set_xlabel(f"{exp.unit} (iteration)")
        ax.set_ylabel(f"{_label(metric, exp)} (fraction)")
        ax.xaxis.set_major_locator(_integer_ticks())
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(
            handles[:12],
            labels[:12],
            fontsize=7,
            loc="best",
            title="trial (x: stopped early)",
            title_fontsize=7,
        )
    return _save(fig, out, f"{_slug(exp.name)}_objective")


def importances(exp: Experiment) -> dict[str, dict[str, float]] | None:
    """PED-ANOVA importances per objective over completed (full-budget) trials, or None."""
    import optuna

    from search_spaces import SPACES
    from search_spaces.introspect import distributions_for

    spec = SPACES.get(exp.space)
    done = [t for t in exp.trials if t["outcome"] == "completed"]
    if spec is None or len(done) < 3:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if mode == "max" else "minimize" for _, mode in exp.objectives]
    study = optuna.create_study(directions=directions)
    for t in done:
        config = {k[len("config/") :]: v for k, v in t.items() if k.startswith("config/") and v is not None}
        dists = distributions_for(spec.space, config)
        params = {k: config[k] for k in dists if k in config}
        values = [t.get(f"last/{m}") for m, _ in exp.objectives]
        if any(v is None or not math.isfinite(v) for v in values) or not params:
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, values=values
            )
        )
    if len(study.trials) < 3:
        return None
    out = {}
    for i, (metric, _) in enumerate(exp.objectives):
        try:
            out[metric] = optuna.importance.get_param_importances(study, target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError):  # e.g. every trial identical
            return None
    return out


def importance_figure(exp: Experiment, values: dict[str, dict[str, float]], out: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 3.4), squeeze=False)
    for ax, (metric, imp) in zip(axes[0], values.items()):
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="tab:blue")
        ax.set_title(f"{exp.name}: parameter importance for {metric}")
        ax.set_xlabel("importance (PED-ANOVA, normalised to sum 1)")
        ax.set_ylabel("parameter")
    return _save(fig, out, f"{_slug(exp.name)}_importance")


def pareto_figure(exp: Experiment, out: Path) -> str:
    plt = _plt()
    (mx, _), (my, _) = exp.objectives[:2]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for outcome, marker, color in (("completed", "o", "tab:blue"), ("early_stopped", "x", "tab:gray")):
        pts = [(t.get(f"last/{mx}"), t.get(f"last/{my}")) for t in exp.trials if t["outcome"] == outcome]
        pts = [p for p in pts if None not in p]
        if pts:
            ax.scatter(
                *zip(*pts),
                marker=marker,
                color=color,
                alpha=0.7,
                label=f"{outcome.replace('_', ' ')} ({len(pts)})",
            )
    front = sorted((t[f"last/{mx}"], t[f"last/{my}"]) for t in exp.trials if t.get("pareto"))
    if front:
        ax.plot(*zip(*front), "-o", color="tab:red", label="Pareto front (full budget only)")
    ax.set_title(f"{exp.name}: clean vs robust accuracy")
    ax.set_xlabel(f"{_label(mx, exp)} (fraction)")
    ax.set_ylabel(f"{_label(my, exp)} (fraction)")
    ax.legend(fontsize=8)
    return _save(fig, out, f"{_slug(exp.name)}_pareto")


def _image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def stage_steps(row: dict[str, Any]) -> list[int]:
    return sorted(
        int(k.split("/")[1]) for k in row if re.fullmatch(r"stage/\d+/cls_acc", k) and row[k] is not None
    )


def wgan_figures(exp: Experiment, trial: dict[str, Any], out: Path) -> tuple[list[str], str]:
    """Stage sample grids and the stage-accuracy chart of one trial, and seed 000's table."""
    plt = _plt()
    reports = exp.reports(trial["trial_id"])
    last = reports[-1] if reports else {}
    steps = stage_steps(last)
    figures = []
    grids = {}
    for row in reports:
        for key, value in row.items():
            if key.startswith("media/stage_") and isinstance(value, bytes):
                grids[int(key.rsplit("_", 1)[1])] = value
    if grids:
        fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6), squeeze=False)
        for ax, step in zip(axes[0], sorted(grids)):
            ax.imshow(_image(grids[step]))
            ax.set_title(f"generator step {step}")
            ax.axis("off")
        fig.suptitle(
            f"{exp.name} / {trial['trial_id']}: generator samples per stage (rows: classes 0-9 cycling)"
        )
        figures.append(_save(fig, out, f"{_slug(exp.name)}_stage_samples"))
    if steps:
        cls = [last[f"stage/{s}/cls_acc"] for s in steps]
        ref = [last[f"stage/{s}/ref_acc"] for s in steps]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        width = 0.38
        xs = range(len(steps))
        ax.bar([x - width / 2 for x in xs], cls, width, label="Robust Classifier (this trial)")
        ax.bar([x + width / 2 for x in xs], ref, width, label="Classic Classifier (reference)")
        ax.set_xticks(list(xs), [str(s) for s in steps])
        ax.set_xlabel("generator stage (generator steps)")
        ax.set_ylabel("accuracy on stage samples (fraction)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{exp.name}: accuracy on generator samples per stage")
        ax.legend(fontsize=8)
        figures.append(_save(fig, out, f"{_slug(exp.name)}_stage_accuracy"))
    table = ""
    if steps:
        header = "| classifier | " + " | ".join(f"step {s}" for s in steps) + " |"
        sep = "|---|" + "---|" * len(steps)
        row_cls = "| Robust Classifier (this trial) | " + " | ".join(f"{v:.1%}" for v in cls) + " |"
        row_ref = "| Classic Classifier (reference) | " + " | ".join(f"{v:.1%}" for v in ref) + " |"
        table = "\n".join([header, sep, row_cls, row_ref])
    return figures, table


def adaptive_figure(exp: Experiment, trial: dict[str, Any], out: Path) -> str:
    plt = _plt()
    rows = exp.reports(trial["trial_id"])
    xs = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    axes[0].plot(xs, [r.get("ratio/k") for r in rows], "-o", color="tab:purple")
    axes[0].set_yscale("log")
    axes[0].set_title("training ratio k (generator steps per classifier step)")
    axes[0].set_ylabel("k (log scale)")
    axes[1].plot(
        xs, [r.get("train/gen_loss") for r in rows], "-o", label="generator loss (mean p(true class))"
    )
    axes[1].plot(xs, [r.get("train/cls_loss") for r in rows], "-o", label="classifier loss (cross-entropy)")
    target = trial.get("config/target_gen_loss")
    if trial.get("config/schedule") == "adaptive" and target is not None:
        axes[1].axhline(target, color="gray", ls="--", label=f"target generator loss {target:.2f}")
    axes[1].set_title("losses per cycle")
    axes[1].set_ylabel("loss")
    axes[1].legend(fontsize=7)
    for key in sorted(k for k in rows[-1] if k.startswith("val/fgsm_acc/")):
        axes[2].plot(xs, [r.get(key) for r in rows], "-o", label=f"FGSM eps {key.rsplit('eps', 1)[1]}")
    axes[2].plot(xs, [r.get("val/pgd_acc") for r in rows], "-s", color="black", label=_pgd(exp))
    axes[2].plot(xs, [r.get("val/acc") for r in rows], "--", color="gray", label="clean")
    axes[2].set_title("validation accuracy under attack per cycle")
    axes[2].set_ylabel("accuracy (fraction)")
    axes[2].set_ylim(0, 1)
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("cycle")
        ax.xaxis.set_major_locator(_integer_ticks())
    fig.suptitle(f"{exp.name} / {trial['trial_id']} (schedule {trial.get('config/schedule')})")
    return _save(fig, out, f"{_slug(exp.name)}_{trial['trial_id']}_cycles")


def noise_grid(experiments: Sequence[Experiment]) -> tuple[list[str], list[list[float | None]], str]:
    """Rows: best trial of each experiment; columns: noise type x level (+ clean); the split used."""
    labels, grid, splits = [], [], set()
    for exp in experiments:
        best = exp.best()
        if best is None:
            continue
        split = "test" if best.get("last/test/acc") is not None else "val"
        splits.add(split)
        row = [best.get(f"last/{split}/acc")]
        row += [best.get(f"last/{split}/noise_acc/{k}/{lvl}") for k in NOISE_KINDS for lvl in NOISE_LEVELS]
        labels.append(f"{exp.name} ({exp.trainable}, {best['trial_id']})")
        grid.append(row)
    return labels, grid, "/".join(sorted(splits)) or "val"


def noise_figure(labels, grid, split: str, out: Path) -> str:
    plt = _plt()
    columns = ["clean"] + [f"{k}\n{lvl}" for k in NOISE_KINDS for lvl in NOISE_LEVELS]
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3, 0.55 * len(labels) + 1.6))
    values = [[v if v is not None else float("nan") for v in row] for row in grid]
    im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    color="white" if v < 0.6 else "black",
                    fontsize=8,
                )
    ax.set_xticks(range(len(columns)), columns, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.grid(False)
    ax.set_title(f"accuracy under noise ({split} split; levels on the [0,1] pixel scale, see README)")
    fig.colorbar(im, ax=ax, label="accuracy (fraction)")
    return _save(fig, out, "noise_grid")


def _md_table(labels, grid) -> str:
    header = (
        "| model | clean | " + " | ".join(f"{k} {lvl}" for k in NOISE_KINDS for lvl in NOISE_LEVELS) + " |"
    )
    sep = "|---|" + "---|" * (1 + len(NOISE_KINDS) * len(NOISE_LEVELS))
    lines = [header, sep]
    for label, row in zip(labels, grid):
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.1%}" for v in row) + " |")
    return "\n".join(lines)


def build_report(
    experiments: Sequence[Experiment], out: Path, title: str = "", noise_only: bool = False
) -> Path:
    """Write every figure and ``report.md`` into ``out``; returns the Markdown path.

    ``noise_only``: just the noise grid of the experiments' best trials.
    """
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title or 'Report: ' + ', '.join(e.name for e in experiments)}", ""]
    for exp in [] if noise_only else experiments:
        ranked = exp.ranked()
        counts = {}
        for t in exp.trials:
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        md += [
            f"## {exp.name}",
            "",
            f"Space `{exp.space}` (trainable `{exp.trainable}`), objective "
            + " and ".join(f"`{m}` ({mode})" for m, mode in exp.objectives)
            + f"; {len(exp.trials)} trial{'' if len(exp.trials) == 1 else 's'}: "
            + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
            + f". Source: `{exp.uri}`.",
            "",
            "```text",
            format_rows(ranked[:10], display_columns(ranked[:10], exp.objectives)),
            "```",
            "",
            f"![objective per {exp.unit}]({objective_curves(exp, out)})",
            "",
        ]
        values = importances(exp)
        if values:
            md += [f"![parameter importances]({importance_figure(exp, values, out)})", ""]
        else:
            md += ["Parameter importances need at least three completed trials of a registered space.", ""]
        if len(exp.objectives) > 1:
            md += [f"![Pareto front]({pareto_figure(exp, out)})", ""]
        best = exp.best()
        if best is not None and exp.trainable == "wgan_gp":
            figures, table = wgan_figures(exp, best, out)
            md += [f"![{f}]({f})" for f in figures] + [""]
            if table:
                md += [
                    f"Seed 000's stage table, trial `{best['trial_id']}`: accuracy on each stage's "
                    "samples (fixed latents, conditioning labels as the truth):",
                    "",
                    table,
                    "",
                ]
        if best is not None and exp.trainable == "adaptive_ratio":
            md += [f"![cycles of the best trial]({adaptive_figure(exp, best, out)})", ""]
    labels, grid, split = noise_grid(experiments)
    if labels:
        md += [
            "## Noise grid (seed 004)",
            "",
            f"![noise grid]({noise_figure(labels, grid, split, out)})",
            "",
            _md_table(labels, grid),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
