"""Past one machine: the KubeRay manifests and the SLURM batch script `orchestrator cluster`
writes, checked against KubeRay's schema and run (the script) on this machine as a one-node
allocation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.kuberay import KubeRayRequest, check_manifest, manifest
from tests.conftest import DRIVER_MARK, kill_marked, marked_processes, short_tmpdir, tiny_trial_config

KUBE = ["cluster", "kuberay", "--image", "registry.example/orchestrator:1", "--storage", "s3://bucket/runs"]
FAKE_AWS = "AKIAIOSFODNN7EXAMPLE"


def _kuberay(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, [*KUBE, *args], env=env)


@pytest.mark.parametrize("kind", ["RayJob", "RayCluster"])
def test_kuberay_manifests_fit_the_schema_and_hold_no_secret(kind):
    secrets = {"WANDB_API_KEY": "feedc0de" * 5, "AWS_ACCESS_KEY_ID": FAKE_AWS}
    args = ["--name", "ar-k8s", "--kind", kind, "--workers", "3", "--gpus-per-worker", "4"]
    args += ["--aws-secret", "aws-creds", "--s3-endpoint", "http://minio:9000"]
    search = ["--space", "adaptive_ratio", "--gpus-per-trial", "0.25", "-n", "64"]
    result = _kuberay(*args, "--", *search, env=secrets)
    assert result.exit_code == 0, result.output
    assert not any(value in result.output for value in secrets.values()), "a secret in the manifest"
    doc = yaml.safe_load(result.output)
    assert check_manifest(doc) == []
    cluster = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    assert (
        group["replicas"] == 3
        and group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    )
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0", "trials run on the workers, not the head"
    for pod in (head["template"], group["template"]):
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "wandb",
            "key": "api-key",
            "optional": True,
        }
        assert env["ORCHESTRATOR_STORAGE"]["value"] == "s3://bucket/runs"
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
        assert container["envFrom"] == [{"secretRef": {"name": "aws-creds"}}]
    if kind == "RayJob":
        entry = doc["spec"]["entrypoint"].split()
        assert entry[:6] == ["orchestrator", "search", "--address", "auto", "--storage", "s3://bucket/runs"]
        assert entry[entry.index("--name") + 1] == "ar-k8s" and "--gpus-per-trial" in entry
        assert doc["spec"]["shutdownAfterJobFinishes"] is True


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replica=2), "replica"),
        (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="two"), "two"),
        (lambda d: d["spec"].update(submissionMode="Batch"), "Batch"),
        (lambda d: d["spec"]["rayClusterSpec"].pop("headGroupSpec"), "headGroupSpec"),
        (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"].update(rayStartParams={"num-cpus": 0}), "0"),
    ],
)
def test_the_schema_refuses_what_kuberay_would_not_run(edit, needle):
    request = KubeRayRequest(name="x", image="img:1", storage="s3://b/p")
    doc = manifest(request, "2.60.0")
    edit(doc)
    problems = check_manifest(doc)
    assert problems and needle in " ".join(problems), problems


def test_kuberay_manifests_validate_against_kuberays_own_crds():
    """With KUBERAY_CRD_DIR naming a KubeRay release's ray-operator/config/crd/bases (v1.7.0
    was checked), the manifests validate against its CRDs' OpenAPI schemas too."""
    jsonschema = pytest.importorskip("jsonschema")
    folder = os.environ.get("KUBERAY_CRD_DIR")
    if not folder:
        pytest.skip("KUBERAY_CRD_DIR is not set")
    for kind, file in (("RayJob", "ray.io_rayjobs.yaml"), ("RayCluster", "ray.io_rayclusters.yaml")):
        crd = yaml.safe_load((Path(folder) / file).read_text())
        schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
        request = KubeRayRequest(name="x", image="img:1", storage="s3://b/p", kind=kind, aws_secret="a")
        doc = manifest(request, "2.60.0")
        assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)] == [], kind


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--storage", "/data/runs", "--name", "x"], "pods share no disk"),
        (["--name", "x", "--workers", "0"], "at least one worker"),
        (["--name", "x", "--memory-per-worker", "lots"], "not a positive quantity"),
        (["--name", "x", "--cpus-per-worker", "0"], "not a positive quantity"),
        (["--name", "Bad_Name"], "not a Kubernetes name"),
        (
            ["--name", "x", "--", "--space", "classic", "--gpus-per-trial", "2"],
            "more than the 1 GPU(s) of a worker pod",
        ),
        (["--name", "x", "--", "--space", "nope"], "nope"),
        (["--name", "x", "--", "--space", "classic", "--storage", "s3://other"], "set by the manifest"),
    ],
)
def test_kuberay_refuses_impossible_requests_in_one_line(tmp_path, args, needle):
    out = tmp_path / "job.yaml"
    cut = args.index("--") if "--" in args else len(args)
    result = _kuberay(*args[:cut], "-o", str(out), *args[cut:])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_kuberay_without_an_image_is_refused():
    result = CliRunner().invoke(cli, ["cluster", "kuberay", "--storage", "s3://b/p", "--name", "x"])
    assert result.exit_code == 2 and "--image" in result.output


# ---- SLURM ----

SLURM = ["cluster", "slurm", "--storage", "/shared/runs", "--name", "ar-slurm"]


def test_the_sbatch_script_is_bash_and_asks_slurm_for_the_allocation(tmp_path):
    script = tmp_path / "job.sbatch"
    args = ["--nodes", "4", "--gpus-per-node", "2", "--memory", "64G", "--partition", "gpu"]
    args += ["-o", str(script)]
    search = ["--space", "adaptive_ratio", "--gpus-per-trial", "0.5"]
    result = CliRunner().invoke(cli, [*SLURM, *args, "--", *search])
    assert result.exit_code == 0, result.output
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for directive in (
        "--nodes=4",
        "--ntasks-per-node=1",
        "--gpus-per-task=2",
        "--mem=64G",
        "--partition=gpu",
    ):
        assert f"#SBATCH {directive}" in text
    assert "#SBATCH --signal=B:TERM@" in text, "SIGTERM before the time limit"
    assert "--space adaptive_ratio --gpus-per-trial 0.5" in text


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--nodes", "0"], "at least one node"),
        (["--time", "tomorrow"], "not a SLURM time"),
        (["--memory", "64 gigs"], "not a SLURM size"),
        (["--cpus-per-node", "0"], "at least one CPU"),
        (
            ["--gpus-per-node", "1", "--", "--space", "classic", "--gpus-per-trial", "2"],
            "more than the 1 GPU(s) of a node",
        ),
        (["--", "--address", "auto"], "set by the script"),
    ],
)
def test_slurm_refuses_impossible_requests_in_one_line(tmp_path, args, needle):
    out = tmp_path / "job.sbatch"
    cut = args.index("--") if "--" in args else len(args)
    result = CliRunner().invoke(cli, [*SLURM, *args[:cut], "-o", str(out), *args[cut:]])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not out.exists()


SRUN = """#!/bin/bash
# srun on one machine: drop srun's options, run the command.
while [ $# -gt 0 ]; do
  case "$1" in
    -w|--nodelist|-N|-n) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
exec "$@"
"""
SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] && echo "$(hostname)" && exit 0
exit 1
"""


def _rows(experiment: Path) -> list[dict]:
    from orchestrator.results import CorruptResults, load_results
    from orchestrator.storage import Location

    try:
        return load_results(Location.parse(experiment))[0].to_pylist()
    except (OSError, ValueError, CorruptResults):
        return []


@pytest.mark.slow
def test_the_sbatch_script_runs_a_search_stops_on_sigterm_and_resumes_when_submitted_again(tmp_path):
    """The script as SLURM runs it on a one-node allocation (srun and scontrol replaced by shims
    that run the command here): a Ray head starts and the search joins it. SIGTERM to the batch
    script (``--signal=B:TERM@...`` before the time limit) reaches the search: its trial is
    recorded interrupted, exit 143, no Ray process outlives the job. The same script run again
    resumes the search and finishes it."""
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    storage, budget = tmp_path / "runs", 4
    experiment = storage / "slurm-e2e"
    sets = [a for k, v in tiny_trial_config("classic").items() for a in ("-s", f"{k}={json.dumps(v)}")]
    search = ["--space", "classic", "-n", "1", "--max-iterations", str(budget), "--no-priors", "--seed", "0"]
    search += ["--wandb-mode", "disabled"]
    script = tmp_path / "job.sbatch"
    args = ["--storage", str(storage), "--name", "slurm-e2e", "--gpus-per-node", "0", "--cpus-per-node", "2"]
    args += ["--port", "6391", "-o", str(script), "--", *search, *sets]
    assert CliRunner().invoke(cli, ["cluster", "slurm", *args]).exit_code == 0
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "SLURM_JOB_NODELIST": "node01",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_CPUS_PER_TASK": "2",
        "RAY_TMPDIR": short_tmpdir(),
        "ORCHESTRATOR_PARQUET_FLUSH_S": "0",
        DRIVER_MARK: str(tmp_path),
    }
    log = tmp_path / "job.out"
    try:
        with open(log, "wb") as out:
            job = subprocess.Popen(["bash", str(script)], env=env, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.time() + 240
            while time.time() < deadline:
                rows = _rows(experiment)
                if rows and 1 <= rows[0]["iterations"] < budget - 1:
                    break
                assert job.poll() is None, log.read_text()[-3000:]
                time.sleep(0.3)
            job.send_signal(signal.SIGTERM)  # to the batch script only, as --signal=B: does
            code = job.wait(120)
        left = marked_processes(str(tmp_path))
        first = log.read_text()
        run = {"env": env, "capture_output": True, "text": True, "timeout": 300}
        again = subprocess.run(["bash", str(script)], **run)
    finally:
        kill_marked(str(tmp_path))
    assert code == 143, first[-3000:]
    assert "ray: head on" in first and "search: orchestrator search --name slurm-e2e" in first
    assert "1 unfinished trial(s) recorded as interrupted" in first
    assert not left, f"Ray outlived the job: {left}"
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "search: orchestrator resume slurm-e2e" in again.stdout
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    assert [(t["outcome"], t["iterations"]) for t in trials] == [("completed", budget)]
