"""Joining a Ray head that requires token authentication (RAY_AUTH_MODE=token): no token or a
wrong one is one line and exit 2 before anything is written; the right one (a token file) runs
the search, and the token lands in no file and no output."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DRIVER_MARK, kill_marked, search_command, short_tmpdir

pytestmark = pytest.mark.slow

TOKEN = "70ce2e11" * 4


@pytest.fixture
def token_head(tmp_path):
    """A Ray head started with token authentication on (its own HOME, temp dir and port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "head-home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    env.update({"RAY_TMPDIR": short_tmpdir(), DRIVER_MARK: f"head-{tmp_path}"})
    start = ["ray", "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1"]
    start += ["--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"]
    done = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        kill_marked(f"head-{tmp_path}")


def _driver_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A driver's environment with no token anywhere unless given (its own empty HOME)."""
    home = tmp_path / "driver-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return {**env, "HOME": str(home), DRIVER_MARK: f"driver-{tmp_path}", **extra}


def _search(tmp_path, address, name, env, *extra) -> subprocess.Popen:
    command = search_command(
        "classic", name, tmp_path / "store", "--address", address, *extra, n=1, iterations=1
    )
    command += ["--wandb-mode", "offline", "--no-priors"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(driver: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = driver.communicate(timeout=300)
    return subprocess.CompletedProcess(driver.args, driver.returncode, stdout, stderr)


def test_a_head_with_token_auth_refuses_missing_and_wrong_tokens_and_takes_the_right_one(
    token_head, tmp_path
):
    try:
        # the two refusals side by side (each is mostly a process importing torch)
        missing = _search(tmp_path, token_head, "no-token", _driver_env(tmp_path))
        wrong = _search(tmp_path, token_head, "bad-token", _driver_env(tmp_path, RAY_AUTH_TOKEN="0" * 32))
        missing, wrong = _finish(missing), _finish(wrong)
        token_file = tmp_path / "auth_token"
        token_file.write_text(TOKEN)
        right = _finish(
            _search(tmp_path, token_head, "token", _driver_env(tmp_path), "--ray-token-file", str(token_file))
        )
    finally:
        kill_marked(f"driver-{tmp_path}")
    for refused, needle in (
        (missing, "requires token authentication"),
        (wrong, "refused this driver's auth token"),
    ):
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], refused.stderr
    assert not (tmp_path / "store" / "no-token").exists() and not (tmp_path / "store" / "bad-token").exists()
    assert right.returncode == 0, right.stdout[-3000:] + right.stderr[-3000:]
    experiment = tmp_path / "store" / "token"
    assert (experiment / "trials.parquet").is_file() and list(experiment.glob("*/wandb/offline-run-*"))
    assert TOKEN not in right.stdout + right.stderr
    for file in experiment.rglob("*"):
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), file
