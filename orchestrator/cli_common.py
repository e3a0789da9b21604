"""What the command line's commands share: one-line errors, option groups, parsers and the
summary printed after a search."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from orchestrator.choices import RUNG_UNITS, SCHEDULERS, SEARCHERS
from orchestrator.errors import SearchInterrupted, StorageWriteError, UserError
from search_spaces import SPACES


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line, without the usage banner."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except SearchInterrupted as exc:
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except StorageWriteError as exc:  # outside a search (which reports its own)
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except click.Abort:  # Ctrl-C before a search started
            click.echo("Aborted!", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def data_dir_option(f):
    return click.option(
        "--data-dir",
        envvar="ORCHESTRATOR_DATA_DIR",
        type=click.Path(file_okay=False),
        help="Dataset root holding torchvision's folders (env: ORCHESTRATOR_DATA_DIR).",
    )(f)


def parse_range(items) -> dict[str, tuple[str, str]]:
    out = {}
    for item in items:
        name, sep, bounds = item.partition("=")
        low, colon, high = bounds.partition(":")
        if not sep or not colon or not name.strip():
            raise UserError(f"--range expects NAME=LOW:HIGH, got {item!r}")
        out[name.strip()] = (low.strip(), high.strip())
    return out


def parse_duration(value: str | None) -> float:
    """Seconds from '90', '90s', '15m' or '2h'."""
    if not value:
        return 0.0
    units = {"s": 1, "m": 60, "h": 3600}
    text = value.strip().lower()
    scale = units.get(text[-1])
    try:
        seconds = float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        raise UserError(f"--time-budget {value!r}: expected seconds or a number with s, m or h") from None
    if seconds <= 0:
        raise UserError("--time-budget must be positive")
    return seconds


def print_outcome(outcome, top: int | None = None) -> None:
    from orchestrator.leaderboard import display_columns, format_rows, returned_line

    rows = outcome.leaderboard[:top] if top else outcome.leaderboard
    click.echo("")
    columns = display_columns(rows, outcome.objectives, outcome.searched)
    click.echo(format_rows(rows, columns) if rows else "no trials")
    click.echo("")
    if rows and rows[0].get("outcome") in ("completed", "early_stopped", "diverged"):
        click.echo(returned_line(rows[0], outcome.searched, outcome.unit))
    if outcome.constraint:
        c = outcome.constraint
        feasible = sum(r.get("feasible") is not False for r in outcome.leaderboard)
        click.echo(
            f"constraint: {c['metric']} >= {c['min']:g} ({feasible} of {len(outcome.leaderboard)} "
            "trials feasible; infeasible ones rank last)"
        )
    click.echo(f"trials:  {outcome.trials_path}")
    click.echo(f"history: {outcome.history_path}")
    if outcome.wandb_runs:
        root = outcome.experiment_uri
        click.echo(
            f"W&B runs ({len(outcome.wandb_runs)}): {root}/*/wandb/"
            f"  (upload: wandb sync {root}/*/wandb/offline-run-*)"
        )
    if outcome.errors:
        click.echo(f"{outcome.errors} trial(s) failed; see the error column of the trials table")


def option_group(*options):
    """Several click options as one decorator (sqlite-utils' shared option groups)."""

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


storage_option = click.option(
    "--storage",
    envvar="ORCHESTRATOR_STORAGE",
    help="Experiment root: a path or a pyarrow URI such as s3://bucket/prefix (default ~/ray_results).",
)


def _token_file(ctx, param, value):
    """Ray reads the token of a head with token authentication from this file (the head's
    ``~/.ray/auth_token``); the path goes into this process's environment only."""
    if value:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(Path(value).resolve())
    return value


def address_option(command):
    """``--address`` and the token file to join a head that requires one."""
    command = click.option(
        "--ray-token-file",
        type=click.Path(exists=True, dir_okay=False),
        expose_value=False,
        callback=_token_file,
        help="With --address: the cluster's Ray auth token file (or set RAY_AUTH_TOKEN).",
    )(command)
    return click.option(
        "--address", help="Join a running Ray cluster (HOST:PORT or auto) instead of a local Ray."
    )(command)


study_storage_option = click.option(
    "--study-storage",
    envvar="ORCHESTRATOR_STUDY_STORAGE",
    metavar="URL",
    help="Optuna storage of the study: sqlite:///..., postgresql://..., mysql://... (passed to Optuna "
    "unchanged) or journal:///path/file.log (default: sqlite:///EXPERIMENT/study.db).",
)

#: What to search and how (the names are SearchSettings' fields).
search_options = option_group(
    click.option(
        "--space",
        required=True,
        type=click.Choice(list(SPACES)),
        help="Search space (see `orchestrator spaces`).",
    ),
    click.option(
        "--num-samples", "-n", type=click.IntRange(min=1), help="Trials to run (default: the space's)."
    ),
    click.option("--searcher", type=click.Choice(SEARCHERS), default="tpe", show_default=True),
    click.option(
        "--objective",
        type=click.Choice(["single", "pareto"]),
        default="single",
        show_default=True,
        help="single: the space's metric; pareto: clean vs robust (APGD) validation accuracy.",
    ),
    click.option("--scheduler", type=click.Choice(SCHEDULERS), help="Default: asha (single), fifo (pareto)."),
    click.option(
        "--max-iterations",
        type=click.IntRange(min=1),
        help="Budget per trial in epochs / cycles / iterations.",
    ),
    click.option(
        "--time-budget",
        help="Wall-clock budget of the search: 600, 90m, 2h. New trials start in its first 75%; every "
        "trial ends itself before the deadline with its test evaluation, so the returned model trained "
        "for as much of the budget as ASHA let it (the iteration budget becomes a cap of 1000).",
    ),
    click.option(
        "--grace-period",
        type=click.IntRange(min=1),
        help="ASHA's first rung, in --rung-unit (default: 1 iteration; 1/60 of --time-budget in seconds).",
    ),
    click.option(
        "--rung-unit",
        type=click.Choice(RUNG_UNITS),
        default="iterations",
        show_default=True,
        help="What ASHA's rungs count: a trial's iterations, or its seconds of training and validation "
        "(needs --time-budget; for spaces where an iteration's cost differs many-fold between trials).",
    ),
    click.option(
        "--reduction-factor", type=click.IntRange(min=2), default=3, show_default=True, help="ASHA's eta."
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Optuna sampler."),
    click.option(
        "--min-clean",
        type=float,
        help="Minimum clean validation accuracy of a feasible trial, in [0, 1] (default per dataset: "
        "MNIST 0.8, Fashion-MNIST and GTSRB 0.6; 0 switches it off).",
    ),
    click.option(
        "--warm-start",
        metavar="NAME",
        help="Start from an earlier experiment of the same space: its finished trials join the new "
        "study and its best configurations run first.",
    ),
    click.option(
        "--warm-start-top",
        type=click.IntRange(min=0),
        default=3,
        show_default=True,
        help="How many of the earlier experiment's best configurations to run first.",
    ),
    click.option(
        "--no-priors",
        is_flag=True,
        default=None,
        help="Do not run the space's known-good configurations first (see `orchestrator spaces`).",
    ),
)
#: Where trials run.
resource_options = option_group(
    click.option(
        "--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True
    ),
    click.option(
        "--gpus-per-trial",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        help="Fractions pack trials onto a GPU (0.25: four per GPU, each capped to a quarter of its memory).",
    ),
    click.option(
        "--max-concurrent",
        type=click.IntRange(min=1),
        help="Trials running at once (default: as resources allow).",
    ),
    address_option,
    click.option(
        "--num-cpus", type=click.IntRange(min=1), help="CPUs of the local Ray instance (default: all)."
    ),
    click.option(
        "--max-failures",
        type=click.IntRange(min=0),
        default=2,
        show_default=True,
        help="Retries of a failed trial, from its last checkpoint.",
    ),
)
#: What every trial gets.
trial_options = option_group(
    data_dir_option,
    click.option(
        "--train-subset", type=click.IntRange(min=0), help="Every trial trains on the first n images."
    ),
    click.option(
        "--set",
        "-s",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Fix a searched parameter, or set any other trainable parameter for every trial.",
    ),
    click.option(
        "--range", "ranges", multiple=True, metavar="NAME=LOW:HIGH", help="Narrow a searched numeric range."
    ),
    click.option(
        "--media-every",
        type=click.IntRange(min=0),
        default=5,
        show_default=True,
        help="Log image grids to W&B every n iterations and at the end (0: never).",
    ),
)
#: Where results and runs go.
output_options = option_group(
    storage_option,
    study_storage_option,
    click.option("--name", help="Experiment name (default: SPACE-DATE-TIME)."),
    click.option("--wandb-project", default="robust-orchestrator", show_default=True),
    click.option(
        "--wandb-mode",
        type=click.Choice(["online", "offline", "disabled"]),
        help="Default: online with an API key and a reachable server, else offline.",
    ),
)


def say_if_running(experiment) -> None:
    """A reader of a running experiment says that its tables are still growing (on stderr)."""
    from orchestrator.driver_lock import describe, holder

    lease = holder(experiment)
    if lease is not None:
        click.echo(f"the search is running: {describe(lease)}; these results are partial", err=True)
