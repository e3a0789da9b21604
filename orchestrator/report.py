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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.figures import (
    experiment_importances,
    importance_figure,
    md_table,
    noise_figure,
    noise_grid,
    objective_curves,
    pareto_figure,
    plt_module,
    save,
    slug,
    title,
)
from orchestrator.importance import Undefined
from orchestrator.leaderboard import display_columns, format_rows, leaderboard
from orchestrator.results import load_results, table_metadata
from orchestrator.storage import Location
from trainables import catalog, metrics


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


@dataclass
class SectionContext:
    """What a trainable's report section gets: the experiment, its best trial, and helpers to
    draw (``plt``), save a figure (``save`` returns the file name to link) and open a PNG
    payload of the history (``image``)."""

    exp: Experiment
    trial: dict[str, Any]
    out: Path

    def plt(self):
        return plt_module()

    def save(self, fig, name: str) -> str:
        return save(fig, self.out, f"{slug(self.exp.name)}_{name}")

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
            md_table(labels, grid),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
