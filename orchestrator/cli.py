"""The ``orchestrator`` command line: a thin layer over the library.

User errors print one line (``Error: ...``) and exit with code 2 before any work starts.
"""

from __future__ import annotations

import sys

import click

from orchestrator.errors import UserError
from trainables import TRAINABLES


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line, without the usage banner."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def data_dir_option(f):
    return click.option(
        "--data-dir",
        envvar="ORCHESTRATOR_DATA_DIR",
        type=click.Path(file_okay=False),
        help="Dataset root holding torchvision's folders (env: ORCHESTRATOR_DATA_DIR).",
    )(f)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robust-orchestrator")
def cli() -> None:
    """Hyperparameter search for robust image classifiers: Ray Tune + Optuna + W&B."""


@cli.command()
@click.option(
    "--trainable", "-t", required=True, type=click.Choice(TRAINABLES), help="What to train."
)
@click.option(
    "--epochs",
    "--cycles",
    "--iterations",
    "budget",
    type=click.IntRange(min=1),
    help="Budget: epochs (classic), cycles (adaptive_ratio) or iterations (wgan_gp).",
)
@click.option(
    "--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="Any trainable parameter."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON/YAML of parameters.",
)
@click.option(
    "--train-subset", type=click.IntRange(min=0), help="Train on the first n training images."
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Default: CUDA when available."
)
@data_dir_option
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False),
    help="Checkpoint here; resume if one exists.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the final report as one JSON line at the end."
)
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
    final = train_once(
        trainable, values, data_dir=data_dir, checkpoint_dir=checkpoint_dir, echo=click.echo
    )
    if as_json:
        click.echo(final_json(final))
        return
    tests = {k: v for k, v in scalar_metrics(final).items() if k.startswith("test/")}
    if tests:
        click.echo("test: " + "  ".join(f"{k[5:]} {v:.4f}" for k, v in tests.items()))


@cli.command()
@click.argument("trainable", type=click.Choice(TRAINABLES))
def params(trainable):
    """List a trainable's parameters: type, default, valid range, meaning.

    Example: orchestrator params adaptive_ratio
    """
    from trainables import get_spec

    spec = get_spec(trainable)
    rows = spec.config_cls.describe()
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{trainable} (budget: {spec.config_cls.budget_key})")
    for r in rows:
        default = r["default"]
        click.echo(f"  {r['name']:<{width}}  {default!s:<22} {r['valid']:<24} {r['doc']}")


def main() -> None:
    cli()


__all__ = ["UserError", "cli", "main"]
