"""``orchestrator report``: figures and a Markdown summary from an experiment's Parquet files.

Nothing but ``trials.parquet`` and ``history.parquet`` is read (their schema metadata names the
space, the trainable, the objectives and the searched parameters); neither Ray, Optuna nor torch
is imported. For each experiment:

- the leaderboard and the objective(s) per trial over iterations, early-stopped and diverged
  trials marked;
- parameter importances (PED-ANOVA, ``orchestrator.importance``) over the trials that ran
  their full budget, or why they are undefined;
- the Pareto front of clean vs robust validation accuracy for multi-objective searches;
- the sections the trainable declares in its catalog entry (``trainables.catalog``), for its
  best trial;

and, over all the experiments given, seed 004's noise grid: accuracy per noise type and level of
each experiment's best trial.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.importance import Undefined, importances
from orchestrator.leaderboard import display_columns, format_rows, leaderboard
from orchestrator.results import load_results, table_metadata
from orchestrator.storage import Location
from trainables import catalog, metrics


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def title(text: str, width: int = 60) -> str:
    """A figure title wrapped onto lines short enough not to be clipped."""
    return textwrap.fill(text, width)


@dataclass
class Experiment:
    name: str
    uri: str
    trials: list[dict[str, Any]]
    history: list[dict[str, Any]]
    space: str
    trainable: str
    objectives: list[tuple[str, str]]
    unit: str = "iteration"
    params: list[dict[str, Any]] = field(default_factory=list)

    @property
    def searched(self) -> list[str]:
        return [p["name"] for p in self.params]

    def ranked(self) -> list[dict[str, Any]]:
        return leaderboard(self.trials, self.objectives)

    def best(self) -> dict[str, Any] | None:
        ranked = [t for t in self.ranked() if t["outcome"] == "completed"]
        return ranked[0] if ranked else (self.ranked() or [None])[0]

    def reports(self, trial_id: str) -> list[dict[str, Any]]:
        rows = [r for r in self.history if r["trial_id"] == trial_id]
        return sorted(rows, key=lambda r: r.get("iteration") or 0)

    def config(self) -> dict[str, Any]:
        """The config of the first trial (attack settings for labels)."""
        trial = self.trials[0] if self.trials else {}
        return {k[len("config/") :]: v for k, v in trial.items() if k.startswith("config/")}

    def label(self, metric: str) -> str:
        return metrics.label(metric, self.config())


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
    trainable = meta.get("trainable", "?")
    unit = meta.get("unit") or (
        catalog.CATALOG[trainable].unit if trainable in catalog.CATALOG else "iteration"
    )
    return Experiment(
        name=name,
        uri=location.uri,
        trials=trials.to_pylist(),
        history=history.to_pylist(),
        space=meta.get("space", "?"),
        trainable=trainable,
        objectives=list(meta["objectives"]),
        unit=unit,
        params=list(meta.get("params") or []),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


@dataclass
class SectionContext:
    """What a trainable's report section gets: the experiment, its best trial, and helpers to
    draw (``plt``), save a figure (``save`` returns the file name to link) and open a PNG
    payload of the history (``image``)."""

    exp: Experiment
    trial: dict[str, Any]
    out: Path

    def plt(self):
        return _plt()

    def save(self, fig, name: str) -> str:
        return _save(fig, self.out, f"{_slug(self.exp.name)}_{name}")

    @staticmethod
    def image(png: bytes):
        from PIL import Image

        return Image.open(io.BytesIO(png)).convert("RGB")

    def reports(self) -> list[dict[str, Any]]:
        return self.exp.reports(self.trial["trial_id"])

    def label(self, metric: str) -> str:
        return self.exp.label(metric)

    def title(self, text: str, width: int = 60) -> str:
        return title(text, width)


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _save(fig, out: Path, name: str) -> str:
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path.name


def objective_curves(exp: Experiment, out: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(exp.objectives), figsize=(5.5 * len(exp.objectives), 4.0), squeeze=False)
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
        ax.set_title(title(f"{exp.name}: {metric} ({mode}) per {exp.unit}"))
        ax.set_xlabel(f"{exp.unit} (iteration)")
        ax.set_ylabel(title(f"{exp.label(metric)} ({metrics.describe(metric).metric.unit})", 45))
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


def experiment_importances(exp: Experiment) -> dict[str, dict[str, float]]:
    """Importances per objective over completed (full-budget) trials; :class:`Undefined` with
    the reason when they cannot be computed."""
    if not exp.params:
        raise Undefined("the results carry no description of the searched parameters")
    done = [t for t in exp.trials if t["outcome"] == "completed"]
    out = {}
    for metric, mode in exp.objectives:
        rows = [{**t, metric: t.get(f"last/{metric}")} for t in done]
        out[metric] = importances(rows, exp.params, metric, mode)
    return out


def importance_figure(exp: Experiment, values: dict[str, dict[str, float]], out: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(values), figsize=(5.5 * len(values), 3.8), squeeze=False)
    for ax, (metric, imp) in zip(axes[0], values.items()):
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="tab:blue")
        mode = dict(exp.objectives)[metric]
        ax.set_title(
            title(f"{exp.name}: what decides {metric} ({'higher' if mode == 'max' else 'lower'} is better)")
        )
        ax.set_xlabel("importance (PED-ANOVA, normalised to sum 1)")
        ax.set_ylabel("parameter")
    return _save(fig, out, f"{_slug(exp.name)}_importance")


def pareto_figure(exp: Experiment, out: Path) -> str:
    plt = _plt()
    (mx, _), (my, _) = exp.objectives[:2]
    fig, ax = plt.subplots(figsize=(5.5, 4.4))
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
    ax.set_title(title(f"{exp.name}: clean vs robust accuracy"))
    ax.set_xlabel(title(f"{exp.label(mx)} (fraction)", 50))
    ax.set_ylabel(title(f"{exp.label(my)} (fraction)", 45))
    ax.legend(fontsize=8)
    return _save(fig, out, f"{_slug(exp.name)}_pareto")


NOISE_CELLS = [(kind, level) for kind, levels in metrics.NOISE_LEVELS.items() for level in levels]


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
        row += [best.get(f"last/{split}/noise_acc/{k}/{lvl}") for k, lvl in NOISE_CELLS]
        labels.append(f"{exp.name} ({exp.trainable}, {best['trial_id']})")
        grid.append(row)
    return labels, grid, "/".join(sorted(splits)) or "val"


def noise_figure(labels, grid, split: str, out: Path) -> str:
    plt = _plt()
    columns = ["clean"] + [f"{k}\n{lvl}" for k, lvl in NOISE_CELLS]
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3, 0.55 * len(labels) + 1.8))
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
    ax.set_title(
        title(f"accuracy under noise ({split} split; levels on the [0,1] pixel scale, see README)", 80)
    )
    fig.colorbar(im, ax=ax, label="accuracy (fraction)")
    return _save(fig, out, "noise_grid")


def _md_table(labels, grid) -> str:
    header = "| model | clean | " + " | ".join(f"{k} {lvl}" for k, lvl in NOISE_CELLS) + " |"
    sep = "|---|" + "---|" * (1 + len(NOISE_CELLS))
    lines = [header, sep]
    for label, row in zip(labels, grid):
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.1%}" for v in row) + " |")
    return "\n".join(lines)


def experiment_section(exp: Experiment, out: Path) -> list[str]:
    ranked = exp.ranked()
    counts: dict[str, int] = {}
    for t in exp.trials:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    md = [
        f"## {exp.name}",
        "",
        f"Space `{exp.space}` (trainable `{exp.trainable}`), objective "
        + " and ".join(f"`{m}` ({mode})" for m, mode in exp.objectives)
        + f"; {len(exp.trials)} trial{'' if len(exp.trials) == 1 else 's'}: "
        + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
        + f". Source: `{exp.uri}`.",
        "",
        "```text",
        format_rows(ranked[:10], display_columns(ranked[:10], exp.objectives, exp.searched)),
        "```",
        "",
        f"![objective per {exp.unit}]({objective_curves(exp, out)})",
        "",
    ]
    flagged = [r for r in ranked if r.get("masking")]
    if flagged:
        md += ["**Possible gradient masking** (robust numbers inconsistent with real robustness):", ""]
        md += [f"- trial `{r['trial_id']}`: {r['masking']}" for r in flagged] + [""]
    try:
        md += [f"![parameter importances]({importance_figure(exp, experiment_importances(exp), out)})", ""]
    except Undefined as why:
        md += [f"Parameter importances: {why}.", ""]
    if len(exp.objectives) > 1:
        md += [f"![Pareto front]({pareto_figure(exp, out)})", ""]
    best = exp.best()
    info = catalog.CATALOG.get(exp.trainable)
    if best is not None and info is not None:
        ctx = SectionContext(exp, best, out)
        for reference in info.report_sections:
            md += catalog.resolve(reference)(ctx)
    return md


def build_report(
    experiments: Sequence[Experiment], out: Path, title_text: str = "", noise_only: bool = False
) -> Path:
    """Write every figure and ``report.md`` into ``out``; returns the Markdown path.

    ``noise_only``: just the noise grid of the experiments' best trials.
    """
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title_text or 'Report: ' + ', '.join(e.name for e in experiments)}", ""]
    for exp in [] if noise_only else experiments:
        md += experiment_section(exp, out)
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
