"""The commands that read what searches left: results, report, export, evaluate, the study's
dashboard, the spaces and parameters. ``orchestrator.cli`` adds
them to the command group."""

from __future__ import annotations

import errno
import json
import signal
from pathlib import Path

import click

from orchestrator.cli_common import data_dir_option, say_if_running, storage_option, study_storage_option
from orchestrator.errors import SearchInterrupted, UserError
from search_spaces import SPACES
from trainables import TRAINABLES
from trainables.metrics import FINAL_ATTACKS


@click.command()
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


@click.command()
@click.argument("name")
@storage_option
@study_storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(min=1, max=65535), default=8080, show_default=True)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Let the page change the study (notes, tells, deletes); asks for a token, printed in its URL.",
)
@click.option(
    "--token",
    envvar="ORCHESTRATOR_DASHBOARD_TOKEN",
    help="Ask every client for this token (?token=... in the first URL). Default: none when "
    "read-only, a random one with --allow-writes.",
)
def dashboard(name, storage, study_storage, host, port, allow_writes, token):
    """Serve optuna-dashboard on an experiment's Optuna study, while the search runs or after.

    The dashboard (http://HOST:PORT) shows the study's optimisation history, the Pareto front of
    a Pareto search, parameter importances, parallel coordinates and each trial's intermediate
    values (one per reported iteration) with its parameters and its Ray Tune trial id. It binds
    to localhost and is read-only by default: no request changes or deletes anything, so the
    study that `resume` and `--warm-start` read stays whole. Ctrl-C stops it.

    Example: orchestrator dashboard adaptive_ratio-20261121-101500 --port 8080
    """
    from orchestrator.dashboard import access, serve
    from orchestrator.settings import load_settings
    from orchestrator.study import open_storage, redact
    from orchestrator.study_sync import study_url_of

    if token is not None and not token.strip():
        raise UserError("--token is empty")
    record = load_settings(name, storage)
    url = study_url_of(record, study_storage)
    if not url:
        raise UserError(f"experiment {name!r} has no Optuna study in a database (it predates them)")
    backend = open_storage(url)
    from orchestrator.storage import Location

    say_if_running(Location.parse(record["experiment_uri"]))
    _check_listen(host, port)
    token, warning = access(host, allow_writes, token)
    if warning:
        click.echo(warning, err=True)
    shown = f"[{host}]" if ":" in host else host
    link = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    mode = "read-write" if allow_writes else "read-only"
    click.echo(f"optuna-dashboard ({mode}): study {name} in {redact(url)}, on {link} (Ctrl-C stops)")
    try:
        serve(backend, host, port, writes=allow_writes, token=token)
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


@click.command()
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
    say_if_running(loc)
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


@click.command()
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


@click.command()
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
        say_if_running(root.child(name))
    if out is None:
        first = root.child(names[0])
        out = first.path + "/report" if not is_uri(first.uri) else f"report-{names[0]}"
    check_output(out, "--out", folder=True)
    path = build_report(experiments, Path(out), title, noise_only=noise_only)
    click.echo(f"report: {path}")


@click.command("export")
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
    own = ("val/acc", "val/apgd_acc", "test/acc", "test/pgd_acc", "test/apgd_acc", "test/apgd_square_acc")
    shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in (*own, *FINAL) if k in metrics)
    click.echo(
        f"{out}: trial {meta['trial_id']} ({meta['trainable']}, {meta['dataset']}, {meta['iteration']} "
        f"iteration(s), {meta.get('train_time_s') or 0:.0f} s of training) {shown}"
    )


@click.command()
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
    help=f"{', '.join(FINAL_ATTACKS)} (repeat for several).",
)
@click.option("-n", "--images", "n", type=int, default=1000, show_default=True, help="Test images attacked.")
@click.option("--eps", type=float, default=0.3, show_default=True, help="L-inf radius, [0, 1] pixel scale.")
@data_dir_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON line per classifier on stdout (progress on stderr)."
)
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
    # --json: the JSON lines alone on stdout; the progress lines go to stderr.
    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
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
