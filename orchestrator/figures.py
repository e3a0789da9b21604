"""The figures of ``orchestrator report``: objective curves, parameter importances, the Pareto
front and the noise grid, each a PNG written into the report folder (matplotlib, Agg)."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.importance import Undefined, importances
from trainables import metrics

if TYPE_CHECKING:
    from orchestrator.report import Experiment


def plt_module():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def title(text: str, width: int = 60) -> str:
    """A figure title wrapped onto lines short enough not to be clipped."""
    return textwrap.fill(text, width)


def integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def save(fig, out: Path, name: str) -> str:
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path)
    plt_module().close(fig)
    return path.name


def objective_curves(exp: Experiment, out: Path) -> str:
    plt = plt_module()
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
        ax.xaxis.set_major_locator(integer_ticks())
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
    return save(fig, out, f"{slug(exp.name)}_objective")


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
    plt = plt_module()
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
    return save(fig, out, f"{slug(exp.name)}_importance")


def pareto_figure(exp: Experiment, out: Path) -> str:
    plt = plt_module()
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
    return save(fig, out, f"{slug(exp.name)}_pareto")


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
    plt = plt_module()
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
    return save(fig, out, "noise_grid")


def md_table(labels, grid) -> str:
    header = "| model | clean | " + " | ".join(f"{k} {lvl}" for k, lvl in NOISE_CELLS) + " |"
    sep = "|---|" + "---|" * (1 + len(NOISE_CELLS))
    lines = [header, sep]
    for label, row in zip(labels, grid):
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.1%}" for v in row) + " |")
    return "\n".join(lines)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
