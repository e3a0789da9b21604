"""``orchestrator cluster``: check a cloud cluster config, and write a KubeRay manifest or a
SLURM batch script that runs a search past one machine. ``orchestrator.cli`` adds the group."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import click

from orchestrator.errors import UserError


@click.group()
def cluster():
    """Clusters: check an edited cluster.yaml before `ray up`, or write what runs a search on
    Kubernetes (KubeRay) or SLURM.

    \b
    Examples:
      orchestrator cluster validate cluster.yaml
      orchestrator cluster kuberay --image REGISTRY/orchestrator:1 --storage s3://bucket/runs \\
          --name ar-k8s -o ar.yaml -- --space adaptive_ratio --gpus-per-trial 0.25 -n 64
      orchestrator cluster slurm --nodes 4 --storage /shared/runs --name ar-slurm -o ar.sbatch \\
          -- --space adaptive_ratio --gpus-per-trial 0.25 -n 64
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


def _search_params(search_args: tuple[str, ...]) -> dict:
    """The search arguments parsed as `orchestrator search` parses them (a bad one is a usage
    error now, not when the job starts on the cluster)."""
    root = click.get_current_context().find_root()
    search = root.command.get_command(root, "search")  # the group's own command (no import cycle)
    with search.make_context("search", list(search_args), resilient_parsing=False) as ctx:
        return dict(ctx.params)


def _fits(params: dict, gpus: float, cpus: float, where: str) -> None:
    """Refuse trials larger than the node (or pod) that would run them."""
    for kind, has in (("gpus", gpus), ("cpus", cpus)):
        wanted = params.get(f"{kind}_per_trial") or 0
        if wanted > has:
            unit = kind[:3].upper()
            raise UserError(f"--{kind}-per-trial {wanted:g} is more than the {has:g} {unit}(s) of {where}")


def _write(text: str, output: str | None, what: str, next_step: str) -> None:
    if not output:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text)
    click.echo(f"wrote {what} to {output}; {next_step}", err=True)


def _cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@cluster.command("kuberay")
@click.option("--image", required=True, help="Image with the project installed.")
@click.option("--storage", required=True, help="URI every pod reaches (s3://bucket/prefix).")
@click.option("--name", required=True, help="RayJob/RayCluster name, also the experiment's name.")
@click.option("--kind", type=click.Choice(["RayJob", "RayCluster"]), default="RayJob", show_default=True)
@click.option("--namespace", default="default", show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Worker pods (fixed count).")
@click.option("--gpus-per-worker", type=int, default=1, show_default=True)
@click.option("--cpus-per-worker", default="8", show_default=True, help="Kubernetes quantity.")
@click.option("--memory-per-worker", default="32Gi", show_default=True, help="Kubernetes quantity.")
@click.option("--wandb-secret", default="wandb", show_default=True, help="Secret holding the W&B key.")
@click.option("--wandb-secret-key", default="api-key", show_default=True, help="Its key in the Secret.")
@click.option("--aws-secret", default="", help="Secret of AWS_* variables for S3 (else the service account).")
@click.option("--service-account", default="", help="Pods' service account (IRSA / workload identity).")
@click.option("--s3-endpoint", default="", help="S3-compatible endpoint (MinIO, Ceph): AWS_ENDPOINT_URL.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (default: stdout).")
@click.argument("search_args", nargs=-1, type=click.UNPROCESSED)
def kuberay(search_args, output, **options):
    """Write a KubeRay RayJob (or RayCluster) manifest that runs `orchestrator search` with
    SEARCH_ARGS (after `--`) on Kubernetes. No secret is written: the W&B key comes from a
    Kubernetes Secret. Apply with `kubectl apply -f FILE`.

    \b
    Example:
      orchestrator cluster kuberay --image REGISTRY/orchestrator:1 --storage s3://bucket/runs \\
          --name ar-k8s --workers 4 -o ar-k8s.yaml -- --space adaptive_ratio --gpus-per-trial 0.25
    """
    from orchestrator.kuberay import KubeRayRequest, ManifestError, render

    request = KubeRayRequest(search_args=tuple(search_args), **options)
    try:
        request.check()
    except ManifestError as error:
        raise UserError(str(error)) from None
    params = _search_params(request.search_args)
    _fits(params, request.gpus_per_worker, _cpus(request.cpus_per_worker), "a worker pod")
    text = render(request, version("ray"))
    _write(text, output, f"a {request.kind}", f"kubectl apply -f {output}")


@cluster.command("slurm")
@click.option("--storage", required=True, help="A folder on a filesystem every node mounts, or a URI.")
@click.option("--name", required=True, help="Job name, also the experiment's name.")
@click.option("--nodes", type=int, default=1, show_default=True)
@click.option("--gpus-per-node", type=int, default=1, show_default=True)
@click.option("--cpus-per-node", type=int, default=8, show_default=True)
@click.option("--memory", default="", help="Memory per node (SLURM size, e.g. 64G).")
@click.option("--time", default="04:00:00", show_default=True, help="Time limit (SLURM format).")
@click.option("--partition", default="")
@click.option("--setup", default="", help="Shell lines run first (e.g. 'source venv/bin/activate').")
@click.option("--port", type=int, default=6379, show_default=True, help="Ray head port.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (default: stdout).")
@click.argument("search_args", nargs=-1, type=click.UNPROCESSED)
def slurm(search_args, output, **options):
    """Write an sbatch script that starts Ray across a SLURM allocation and runs `orchestrator
    search` with SEARCH_ARGS (after `--`) on its first node. Submitted again, it resumes.

    \b
    Example:
      orchestrator cluster slurm --nodes 4 --gpus-per-node 4 --storage /shared/runs \\
          --name ar-slurm -o ar.sbatch -- --space adaptive_ratio --gpus-per-trial 0.25
    """
    from orchestrator.slurm import ScriptError, SlurmRequest, render

    request = SlurmRequest(search_args=tuple(search_args), **options)
    try:
        text = render(request)
    except ScriptError as error:
        raise UserError(str(error)) from None
    _fits(_search_params(request.search_args), request.gpus_per_node, request.cpus_per_node, "a node")
    _write(text, output, "an sbatch script", f"sbatch {output}")
