"""The ``orchestrator`` command line: a thin layer over the library.

User errors print one line (``Error: ...``) and exit with code 2 before any work starts; a search
that cannot go on prints one line and exits with 1; an interrupted one says how to resume it
and exits with 130 (``orchestrator.errors``).
"""

from __future__ import annotations

import click

from orchestrator.cli_cluster import cluster as cluster_group
from orchestrator.cli_common import (
    OneLineErrors,
    address_option,
    data_dir_option,
    output_options,
    parse_duration,
    parse_range,
    print_outcome,
    resource_options,
    search_options,
    storage_option,
    study_storage_option,
    trial_options,
)
from orchestrator.cli_inspect import dashboard, evaluate, export_cmd, params, report, results, spaces
from orchestrator.errors import UserError
from trainables import TRAINABLES


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robust-orchestrator")
def cli() -> None:
    """Hyperparameter search for robust image classifiers: Ray Tune + Optuna + W&B."""


@cli.command()
@click.option("--trainable", "-t", required=True, type=click.Choice(TRAINABLES), help="What to train.")
@click.option(
    "--epochs",
    "--cycles",
    "--iterations",
    "budget",
    type=click.IntRange(min=1),
    help="Budget in the trainable's unit (epochs, cycles, iterations: `orchestrator params` names it).",
)
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="Any trainable parameter.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON/YAML of parameters.",
)
@click.option("--train-subset", type=click.IntRange(min=0), help="Train on the first n training images.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Default: CUDA when available.")
@data_dir_option
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False),
    help="Checkpoint here; resume if one exists.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final report as one JSON line at the end.")
def train(
    trainable,
    budget,
    overrides,
    config_file,
    train_subset,
    device,
    data_dir,
    checkpoint_dir,
    as_json,
):
    """Run one trial of a trainable on its own, one progress line per iteration.

    \b
    Example:
      orchestrator train --trainable classic --epochs 2 --data-dir ../shared/data
      orchestrator train -t adaptive_ratio --cycles 5 -s schedule=adaptive -s target_gen_loss=0.6
    """
    from orchestrator.training import load_config_file, parse_overrides, train_once
    from trainables import get_spec
    from trainables.reporting import final_json, scalar_metrics

    values = load_config_file(config_file) if config_file else {}
    values.update(parse_overrides(overrides))
    if budget is not None:
        values[get_spec(trainable).config_cls.budget_key] = budget
    if train_subset is not None:
        values["train_subset"] = train_subset
    if device is not None:
        values["device"] = device
    final = train_once(trainable, values, data_dir=data_dir, checkpoint_dir=checkpoint_dir, echo=click.echo)
    if as_json:
        click.echo(final_json(final))
        return
    tests = {k: v for k, v in scalar_metrics(final).items() if k.startswith("test/")}
    if tests:
        click.echo("test: " + "  ".join(f"{k[5:]} {v:.4f}" for k, v in tests.items()))


@cli.command()
@search_options
@resource_options
@trial_options
@output_options
@click.option(
    "--top", type=click.IntRange(min=1), default=10, show_default=True, help="Trials in the final table."
)
def search(overrides, ranges, time_budget, train_subset, media_every, top, **options):
    """Search a space with Optuna through Ray Tune; log to W&B; write Parquet results.

    \b
    Examples:
      orchestrator search --space adaptive_ratio
      orchestrator search --space classic --objective pareto --searcher nsga2 -n 24
      orchestrator search --space wgan_gp --address auto --gpus-per-trial 0.25 --storage s3://bucket/runs
      orchestrator search --space classic --warm-start classic-20261121-101500 --warm-start-top 3
    """
    from orchestrator.plan import plan_search
    from orchestrator.search import run_search
    from orchestrator.settings import SearchSettings
    from orchestrator.training import parse_overrides

    config = parse_overrides(overrides)
    if train_subset is not None:
        config["train_subset"] = train_subset
    config.setdefault("media_every", media_every)
    settings = SearchSettings(
        **{k: v for k, v in options.items() if v is not None},
        config=config,
        ranges=parse_range(ranges),
        time_budget_s=parse_duration(time_budget),
    )
    outcome = run_search(plan_search(settings), echo=click.echo)
    print_outcome(outcome, top)


@cli.command()
@click.argument("name")
@storage_option
@address_option
@study_storage_option
@click.option(
    "--fresh",
    is_flag=True,
    help="Start the search over in this experiment (for a Ray Tune state that cannot be restored): "
    "finished trials stay, unfinished ones are recorded as interrupted, new trials run.",
)
def resume(name, storage, address, study_storage, fresh):
    """Continue an interrupted search: unfinished and errored trials resume from their last
    checkpoints, finished ones stay, the Optuna study is kept. Never starts over unless told
    to with --fresh.

    \b
    Examples:
      orchestrator resume adaptive_ratio-20261121-101500
      orchestrator resume adaptive_ratio-20261121-101500 --fresh
    """
    from orchestrator.resume import restart_search, resume_search

    run = restart_search if fresh else resume_search
    print_outcome(run(name, storage, address, echo=click.echo, study_storage=study_storage))


for command in (params, dashboard, results, spaces, report, export_cmd, evaluate, cluster_group):
    cli.add_command(command)


def main() -> None:
    cli()


__all__ = ["UserError", "cli", "main"]


if __name__ == "__main__":
    main()
