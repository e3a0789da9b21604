"""The ``orchestrator`` command line: a thin layer over the library.

User errors print one line (``Error: ...``) and exit with code 2 before any work starts; a search
that cannot go on prints one line and exits with 1; an interrupted one says how to resume it
and exits with 130 (``orchestrator.errors``).
"""

from __future__ import annotations

import errno
import json
import signal
import sys
from pathlib import Path

import click

from orchestrator.choices import SCHEDULERS, SEARCHERS
from orchestrator.errors import SearchInterrupted, StorageWriteError, UserError
from search_spaces import SPACES
from trainables import TRAINABLES


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
@click.argument("trainable", type=click.Choice(TRAINABLES))
def params(trainable):
    """List a trainable's parameters: type, default, valid range, meaning.

    Example: orchestrator params adaptive_ratio
    """
    from trainables.catalog import config_class

    config_cls = config_class(trainable)  # without torch: a table in well under a second
    rows = config_cls.describe()
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{trainable} (budget: {config_cls.budget_key})")
    for r in rows:
        default = r["default"]
        click.echo(f"  {r['name']:<{width}}  {default!s:<22} {r['valid']:<24} {r['doc']}")


def _parse_range(items) -> dict[str, tuple[str, str]]:
    out = {}
    for item in items:
        name, sep, bounds = item.partition("=")
        low, colon, high = bounds.partition(":")
        if not sep or not colon or not name.strip():
            raise UserError(f"--range expects NAME=LOW:HIGH, got {item!r}")
        out[name.strip()] = (low.strip(), high.strip())
    return out


def _parse_duration(value: str | None) -> float:
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


def _print_outcome(outcome, top: int | None = None) -> None:
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
address_option = click.option(
    "--address", help="Join a running Ray cluster (HOST:PORT or auto) instead of a local Ray."
)
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
        "--grace-period", type=click.IntRange(min=1), default=1, show_default=True, help="ASHA's first rung."
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
        ranges=_parse_range(ranges),
        time_budget_s=_parse_duration(time_budget),
    )
    outcome = run_search(plan_search(settings), echo=click.echo)
    _print_outcome(outcome, top)


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
    from orchestrator.search import restart_search, resume_search

    run = restart_search if fresh else resume_search
    _print_outcome(run(name, storage, address, echo=click.echo, study_storage=study_storage))


def _say_if_running(experiment) -> None:
    """A reader of a running experiment says that its tables are still growing (on stderr)."""
    from orchestrator.driver_lock import describe, holder

    lease = holder(experiment)
    if lease is not None:
        click.echo(f"the search is running: {describe(lease)}; these results are partial", err=True)


@cli.command()
@click.argument("name")
@storage_option
@study_storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(min=1, max=65535), default=8080, show_default=True)
def dashboard(name, storage, study_storage, host, port):
    """Serve optuna-dashboard on an experiment's Optuna study, while the search runs or after.

    The dashboard (http://HOST:PORT) shows the study's optimisation history, the Pareto front of
    a Pareto search, parameter importances, parallel coordinates and each trial's intermediate
    values (one per reported iteration) with its parameters and its Ray Tune trial id. It binds
    to localhost by default; Ctrl-C stops it.

    Example: orchestrator dashboard adaptive_ratio-20261121-101500 --port 8080
    """
    from orchestrator.search import study_url_of
    from orchestrator.settings import load_settings
    from orchestrator.study import open_storage, redact

    record = load_settings(name, storage)
    url = study_url_of(record, study_storage)
    if not url:
        raise UserError(f"experiment {name!r} has no Optuna study in a database (it predates them)")
    backend = open_storage(url)
    from orchestrator.storage import Location

    _say_if_running(Location.parse(record["experiment_uri"]))
    _check_listen(host, port)
    import optuna_dashboard

    click.echo(f"optuna-dashboard: study {name} in {redact(url)}, on http://{host}:{port} (Ctrl-C stops)")
    try:
        optuna_dashboard.run_server(backend, host=host, port=port)
    except OSError as exc:  # taken between the check and the server's bind
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None


def _check_listen(host: str, port: int) -> None:
    """One line before anything starts when the dashboard could not listen on host:port."""
    import socket

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"--host {host}: not an address this machine can listen on ({reason})") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            hint = "; pick another --port" if exc.errno == errno.EADDRINUSE else ""
            where = f"--host {host} --port {port}"
            raise UserError(f"{where}: cannot listen there ({exc.strerror}){hint}") from None


@cli.command()
@click.argument("name")
@storage_option
@click.option("--top", type=click.IntRange(min=1), help="Show the best N trials only.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option("--all-columns", is_flag=True, help="Every column of trials.parquet, not just the summary.")
def results(name, storage, top, fmt, all_columns):
    """Show an experiment's trials from its Parquet files (Ray need not run).

    Example: orchestrator results adaptive_ratio-20261121-101500 --top 5 --format csv
    """
    from orchestrator.leaderboard import display_columns, format_rows, leaderboard, returned_line
    from orchestrator.results import load_results
    from orchestrator.settings import load_settings
    from orchestrator.storage import Location

    record = load_settings(name, storage)
    loc = Location.parse(record["experiment_uri"])
    _say_if_running(loc)
    try:
        trials, _ = load_results(loc)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    objectives = [tuple(o) for o in record["objectives"]]
    rows = leaderboard(trials.to_pylist(), objectives, top)
    searched = [p["name"] for p in record.get("params") or []]
    columns = list(trials.column_names) if all_columns else display_columns(rows, objectives, searched)
    click.echo(format_rows(rows, columns, fmt))
    if fmt == "table" and rows and rows[0].get("outcome") in ("completed", "early_stopped", "diverged"):
        click.echo(returned_line(rows[0], searched, record.get("unit") or "iteration"))


@cli.command()
def spaces():
    """List every search space: trainable, objective, default budget, parameters, ranges, priors.

    Example: orchestrator spaces
    """
    from search_spaces.introspect import explore

    for spec in SPACES.values():
        click.echo(f"{spec.name}: {spec.description}")
        click.echo(
            f"  trainable {spec.trainable}; objective {spec.objective.metric} "
            f"({spec.objective.mode}); pareto " + " & ".join(f"{o.metric} ({o.mode})" for o in spec.pareto)
        )
        click.echo(f"  default budget: {spec.num_samples} trials x {spec.max_iterations} iterations")
        params = explore(spec.space)
        width = max(len(p.name) for p in params)
        for p in params:
            click.echo(f"    {p.name:<{width}}  {p.describe()}")
        for prior in spec.priors:
            click.echo(f"  prior {prior.name} (runs first; {prior.source}):")
            click.echo("    " + " ".join(f"{k}={v}" for k, v in prior.params.items()))


@cli.command()
@click.argument("names", nargs=-1, required=True)
@storage_option
@click.option(
    "--out", type=click.Path(file_okay=False), help="Folder (default: <experiment>/report, or ./report-NAME)."
)
@click.option("--title", default="", help="Title of the Markdown summary.")
@click.option("--noise-only", is_flag=True, help="Only the noise grid of the experiments' best trials.")
def report(names, storage, out, title, noise_only):
    """Figures (PNG) and a Markdown summary from experiments' Parquet files (no Ray needed).

    With several experiments the noise grid compares their best trials.

    Example: orchestrator report adaptive_ratio-20261121-101500 classic-20261121-093000
    """
    from pathlib import Path

    from orchestrator.report import build_report, load_experiment
    from orchestrator.storage import Location, check_output, default_storage, is_uri

    root = Location.parse(storage or default_storage())
    experiments = [load_experiment(root.child(name)) for name in names]
    for name in names:
        _say_if_running(root.child(name))
    if out is None:
        first = root.child(names[0])
        out = first.path + "/report" if not is_uri(first.uri) else f"report-{names[0]}"
    check_output(out, "--out", folder=True)
    path = build_report(experiments, Path(out), title, noise_only=noise_only)
    click.echo(f"report: {path}")


@cli.command("export")
@click.argument("name")
@storage_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write (model.pt).")
@click.option("--trial", "trial_id", help="Trial id (default: the leaderboard's best completed trial).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["state_dict", "exported"]),
    default="state_dict",
    show_default=True,
    help="state_dict (+ loader) or a torch.export program (plain PyTorch).",
)
def export_cmd(name, storage, out, trial_id, fmt):
    """Export the best classifier of an experiment.

    \b
    Load it back:
      from orchestrator.export import load_classifier, preprocess
      model, meta = load_classifier("model.pt")
      logits = model(preprocess(uint8_images))  # uint8 (N, 28, 28), e.g. MNIST(...).data
    or, for --format exported, with plain PyTorch: torch.export.load("model.pt2").module()

    NAME is an experiment, or a directory written by `orchestrator train --checkpoint-dir`.

    Example: orchestrator export classic-20261121-093000 --out model.pt
    """
    from orchestrator.export import export_checkpoint, export_classifier
    from orchestrator.leaderboard import EVALUATION_COLUMNS

    FINAL = tuple(k.removeprefix("last/") for k in EVALUATION_COLUMNS)  # orchestrator evaluate's
    from orchestrator.storage import Location, check_output, default_storage
    from trainables.reporting import CHECKPOINT_FILE

    check_output(out, "--out")
    if (Path(name) / CHECKPOINT_FILE).exists():
        if trial_id:
            raise UserError("--trial applies to experiments, not to a checkpoint directory")
        meta = export_checkpoint(name, out, fmt=fmt)
        where = f"{name}, iteration {meta['iteration']}"
        click.echo(f"{out}: {meta['trainable']} ({meta['dataset']}) from {where}")
        return
    meta = export_classifier(
        Location.parse(storage or default_storage()).child(name), out, trial_id=trial_id, fmt=fmt
    )
    metrics = meta["metrics"]
    shown = "  ".join(
        f"{k} {metrics[k]:.4f}"
        for k in ("val/acc", "val/apgd_acc", "test/acc", "test/pgd_acc", "test/apgd_acc", *FINAL)
        if k in metrics
    )
    click.echo(
        f"{out}: trial {meta['trial_id']} ({meta['trainable']}, {meta['dataset']}, {meta['iteration']} "
        f"iteration(s), {meta.get('train_time_s') or 0:.0f} s of training) {shown}"
    )


@cli.command()
@click.argument("target")
@storage_option
@click.option("--trial", "trial_id", help="One trial of the experiment (default: the leaderboard's best).")
@click.option("--top", type=int, default=1, show_default=True, help="The leaderboard's first N trials.")
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    default=("pgd", "autoattack"),
    show_default=True,
    help="pgd, pgd-restarts, apgd-ce, apgd-t, square or autoattack (repeat for several).",
)
@click.option("-n", "--images", "n", type=int, default=1000, show_default=True, help="Test images attacked.")
@click.option("--eps", type=float, default=0.3, show_default=True, help="L-inf radius, [0, 1] pixel scale.")
@data_dir_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per classifier instead.")
def evaluate(target, storage, trial_id, top, attacks, n, eps, data_dir, device, as_json):
    """Final numbers: attack an experiment's best trials, or an exported classifier, on the test split.

    TARGET is an experiment name (its results get test/aa_acc etc., shown by `results`,
    `report` and `export`) or a file written by `orchestrator export`. The attacks come from the
    Adversarial Robustness Toolbox (APGD-CE, APGD-T, Square; autoattack = their per-image worst
    case) beside the project's PGD-40. Clean accuracy on the whole test split, attacks on a
    fixed subset of N images.

    \b
    Example:
      orchestrator evaluate adaptive_ratio-20261122-101500 --top 3 --attack autoattack -n 500
      orchestrator evaluate model.pt --attack pgd --attack square --data-dir ../shared/data
    """
    from orchestrator import interrupt
    from orchestrator.evaluate import check_device, check_request, evaluate_classifier, evaluate_experiment
    from orchestrator.storage import Location, default_storage

    check_request(attacks, n, eps, top)
    check_device(device)
    echo = (lambda _: None) if as_json else click.echo
    kwargs = dict(n=n, eps=eps, data_dir=data_dir, device=device, echo=echo)
    is_file = Path(target).is_file()
    if is_file and (trial_id or top != 1):
        raise UserError("--trial and --top apply to experiments, not to a model file")
    experiment = None if is_file else Location.parse(storage or default_storage()).child(target)
    try:
        with interrupt.signals_raise():
            if experiment is None:
                results = [evaluate_classifier(target, attacks, **kwargs)]
            else:
                results = evaluate_experiment(experiment, attacks, trial_id=trial_id, top=top, **kwargs)
    except KeyboardInterrupt:
        signum = interrupt.requested() or signal.SIGINT
        kept = (
            f"each attack that finished is saved in {experiment.child('evaluations.parquet').uri}"
            if experiment is not None
            else "the attacks that finished are printed above"
        )
        error = SearchInterrupted(
            f"evaluate interrupted by {signal.Signals(signum).name}: {kept}; run it again for the rest"
        )
        error.exit_code = 128 + signum
        raise error from None
    for result in results:
        if as_json:
            click.echo(json.dumps(result.as_dict()))
            continue
        shown = "  ".join(f"{a} {v:.4f}" for a, v in result.attacks.items())
        click.echo(
            f"{result.target}: clean {result.clean:.4f}  {shown}  worst {result.worst:.4f}  "
            f"(eps {eps} on [0, 1] pixels, {result.n} images)"
        )
    if not as_json and experiment is not None:
        click.echo(f"saved beside the experiment: {experiment.child('evaluations.parquet').uri}")


@cli.group()
def cluster():
    """Ray cluster configs: check an edited cluster.yaml before `ray up`.

    Example: orchestrator cluster validate cluster.yaml
    """


@cluster.command("validate")
@click.argument("config", type=click.Path(exists=True, dir_okay=False), default="cluster.yaml")
def cluster_validate(config):
    """Run a cluster launcher config through Ray's own preparation and schema validation and
    the project's rules (pinned Ray image, GPU workers, shared storage, no secrets).

    Example: orchestrator cluster validate my-cluster.yaml
    """
    from orchestrator.cluster import validate_cluster_config

    check = validate_cluster_config(config)
    for line in check.summary:
        click.echo(f"  {line}")
    for warning in check.warnings:
        click.echo(f"warning: {warning}")
    for error in check.errors:
        click.echo(f"error: {error}", err=True)
    if not check.ok:
        raise SystemExit(2)
    click.echo(f"{config}: valid")


def main() -> None:
    cli()


__all__ = ["UserError", "cli", "main"]


if __name__ == "__main__":
    main()
