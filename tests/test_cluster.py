"""cluster.yaml validation and a trial's share of a GPU (a multi-node search that packs two trials
onto each GPU and loses a node: tests/test_s3_e2e.py)."""

import copy
from pathlib import Path

import pytest
import ray
import torch
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.cluster import prepare_and_validate, validate_cluster_config
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
