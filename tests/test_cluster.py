"""cluster.yaml validation, multi-node searches, node loss, and trials packed onto GPUs."""

import copy
import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import ray
import torch
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.cluster import prepare_and_validate, validate_cluster_config
from orchestrator.results import CorruptResults, load_results
from orchestrator.storage import Location
from tests.conftest import search_command
from trainables.runtime import Runtime, cap_gpu_memory, gpu_memory_fraction

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


def test_cluster_yaml_passes_rays_own_validation():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    prepared = prepare_and_validate(copy.deepcopy(config))
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    workers = {name: t for name, t in types.items() if name != head}
    assert prepared["provider"]["type"] == "aws"
    assert prepared["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert len(workers) >= 2 and all(
        t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for t in workers.values()
    )
    assert all(t["max_workers"] >= t["min_workers"] == 0 for t in workers.values())
    assert prepared["idle_timeout_minutes"] > 0
    assert prepared["file_mounts"]["/home/ray/.netrc"] == "~/.netrc", "W&B key comes from the user's login"
    assert any("ORCHESTRATOR_STORAGE=s3://" in c for c in prepared["setup_commands"])


def test_project_checks_pass_with_only_placeholder_warnings():
    check = validate_cluster_config(CLUSTER_YAML)
    assert check.ok, check.errors
    assert all("placeholder" in w for w in check.warnings)


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda c: c["available_node_types"]["gpu_1x"].update(max_wrkers=3), "max_wrkers"),
        (lambda c: c["available_node_types"]["gpu_1x"].update(min_workers=20), "max_workers"),
        (
            lambda c: c["available_node_types"]["gpu_1x"].update(resources={"GPU": "one"}),
            "Ray rejects",
        ),
        (lambda c: c.pop("head_node_type"), "head_node_type"),
        (lambda c: c["docker"].update(image="rayproject/ray-ml:2.9.0-gpu"), "ray-ml"),
        (lambda c: c["docker"].update(image="rayproject/ray:2.10.0-py311-gpu"), "does not match"),
        (
            lambda c: c.update(setup_commands=["pip install -e /home/ray/robust-orchestrator"]),
            "ORCHESTRATOR_STORAGE",
        ),
        (
            lambda c: c.update(setup_commands=["echo 'export ORCHESTRATOR_STORAGE=/tmp/x' >> ~/.bashrc"]),
            "node-local",
        ),
        (
            lambda c: c.update(initialization_commands=["export WANDB_API_KEY=" + "ab12" * 10]),
            "W&B API key",
        ),
        (
            lambda c: c["available_node_types"].pop("gpu_1x") and c["available_node_types"].pop("gpu_4x"),
            "GPU",
        ),
    ],
)
def test_broken_configs_fail(tmp_path, edit, needle):
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    edit(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    check = validate_cluster_config(path)
    assert not check.ok
    assert any(needle in e for e in check.errors), check.errors
    result = CliRunner().invoke(cli, ["cluster", "validate", str(path)])
    assert result.exit_code == 2


def test_cli_validates_the_shipped_config():
    result = CliRunner().invoke(cli, ["cluster", "validate", str(CLUSTER_YAML)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "g5.xlarge" in result.output


def test_fractional_gpu_caps_cuda_memory(monkeypatch):
    assert gpu_memory_fraction(0.25) == 0.25
    assert (
        gpu_memory_fraction(1) is None and gpu_memory_fraction(0) is None and gpu_memory_fraction(2) is None
    )
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    fake_gpu = Runtime(device=torch.device("cuda", 0), amp_dtype=None, channels_last=True)
    assert cap_gpu_memory(fake_gpu, 0.25) == 0.25
    assert calls == [(0.25, torch.device("cuda", 0))]
    assert cap_gpu_memory(Runtime(torch.device("cpu"), None, True), 0.25) is None


# ---- a local multi-node cluster: several Ray nodes on this machine with logical GPUs ----


@pytest.fixture()
def cluster(isolated_environment):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    yield cluster
    cluster.shutdown()


def _search(cluster, tmp_path, name, *extra, n=4, iterations=4):
    args = search_command(
        "classic",
        name,
        tmp_path,
        "--address",
        cluster.address,
        "--wandb-mode",
        "disabled",
        *extra,
        n=n,
        iterations=iterations,
    )
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed when the driver exits
    env = {**os.environ, "ORCHESTRATOR_PARQUET_FLUSH_S": "1"}  # see trials move as they report
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


def _history(experiment: Path) -> list[dict]:
    """History rows so far: the appended parts while the search runs, the table after it."""
    try:
        return load_results(Location.parse(experiment))[1].to_pylist()
    except (OSError, ValueError, CorruptResults):
        return []


def _wait(driver, timeout, tmp_path, name):
    try:
        driver.wait(timeout)
    except subprocess.TimeoutExpired:
        driver.kill()
        raise AssertionError((tmp_path / f"{name}.log").read_text()[-3000:]) from None
    assert driver.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]


ITERATIONS = 6


def _spans(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Trial id -> (first start, last end) of its iterations in ``rows``."""
    spans = {}
    for r in rows:
        start = r["timestamp"] - r["time_this_iter_s"]
        lo, hi = spans.get(r["trial_id"], (start, r["timestamp"]))
        spans[r["trial_id"]] = (min(lo, start), max(hi, r["timestamp"]))
    return spans


@pytest.mark.slow
def test_trials_pack_onto_gpus_spread_over_nodes_and_survive_losing_one(cluster, tmp_path):
    # Two nodes of one logical GPU each and half a GPU per trial: two trials share each GPU, and
    # the four trials use both nodes.
    worker_a = cluster.add_node(num_cpus=2, num_gpus=1)
    worker_b = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    experiment = tmp_path / "spread"
    # Iterations long enough (a larger training subset) that a trial seen early on node B is
    # still running when the node goes: the node is removed only while one has iterations left.
    flags = ["--gpus-per-trial", "0.5", "--cpus-per-trial", "1", "--max-concurrent", "4"]
    flags += ["--max-failures", "3", "-s", "train_subset=512"]
    driver = _search(cluster, tmp_path, "spread", *flags, n=4, iterations=ITERATIONS)
    deadline = time.time() + 240
    while time.time() < deadline:
        rows = _history(experiment)
        reached = {}
        for r in rows:
            if r.get("node_id") == worker_b.node_id:
                reached[r["trial_id"]] = max(reached.get(r["trial_id"], 0), r["iteration"])
        on_b = {t for t, it in reached.items() if it <= ITERATIONS - 2}
        if on_b and {r.get("node_id") for r in rows} >= {worker_a.node_id, worker_b.node_id}:
            break
        assert driver.poll() is None, (tmp_path / "spread.log").read_text()[-3000:]
        time.sleep(0.5)
    else:
        raise AssertionError("trials did not reach both worker nodes")
    cluster.remove_node(worker_b, allow_graceful=False)  # a worker node is lost mid-run
    _wait(driver, 300, tmp_path, "spread")

    trials = load_results(Location.parse(experiment))[0].to_pylist()
    assert len(trials) == 4 and all(t["outcome"] == "completed" for t in trials)
    history = _history(experiment)
    # Two trials at once on the surviving node's one GPU (node B was lost after its first report).
    spans = sorted(_spans([r for r in history if r["node_id"] == worker_a.node_id]).values())
    assert any(a_hi > b_lo for (_, a_hi), (b_lo, _) in itertools.pairwise(spans)), (
        "no two trials shared a GPU"
    )
    moved = [t for t in trials if t["trial_id"] in on_b and t["num_failures"] >= 1]
    assert moved, "a trial running on the lost node failed and was retried"
    for trial in moved:
        rows = sorted(
            (r for r in history if r["trial_id"] == trial["trial_id"]), key=lambda r: r["iteration"]
        )
        assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))
        assert rows[-1]["node_id"] == worker_a.node_id, "finished on the surviving node"
        # Resumed from its checkpoint: the retried trial did not start again at iteration 1.
        results = [
            json.loads(line)
            for line in Path(trial["checkpoint_path"]).parent.joinpath("result.json").read_text().splitlines()
        ]
        iterations = [r["iteration"] for r in results]
        assert iterations == sorted(set(iterations)), iterations
