"""A multi-node search on S3-compatible storage (moto's S3 server on 127.0.0.1): a Ray head and
two worker nodes started as separate `ray start` processes, trials on the workers (two sharing
each node's GPU) writing
checkpoints, Parquet parts and W&B files to S3; a worker node is killed mid-search and its
trial continues elsewhere from its S3 checkpoint; the driver is killed and `orchestrator
resume` from a fresh local folder finishes the search; `results`, `report`, `export` and
`evaluate` read the experiment from S3."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.results import CorruptResults, load_results
from orchestrator.storage import Location, check_writable
from orchestrator.study import study_trials
from tests.conftest import DRIVER_MARK, kill_marked, marked_processes, search_command, short_tmpdir

pytestmark = pytest.mark.slow

BUCKET, NAME, ITERATIONS, TRIALS = "runs", "s3-multinode", 4, 3
FAKE_SECRET = "m0t0-secret-" + "ab" * 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on a free local port, a bucket, and the environment pyarrow and boto
    read (AWS_ENDPOINT_URL and fake credentials), for this process and its children."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # moto keeps its buckets in this process, across servers: start from none.
    urllib.request.urlopen(urllib.request.Request(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset", method="POST"))
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield boto3.client("s3")
    server.stop()


def _start_node(tmp_path, mark: str, *args: str) -> None:
    env = {**os.environ, DRIVER_MARK: mark}
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--node-ip-address",
        "127.0.0.1",
        "--disable-usage-stats",
        *args,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture
def ray_nodes(s3, tmp_path, monkeypatch):
    """A head (no CPUs: it runs no trials) and worker nodes A and B (2 CPUs and one logical GPU
    each), each a separate `ray start`; their processes carry a mark naming the node."""
    monkeypatch.setenv("RAY_TMPDIR", short_tmpdir())
    port = _free_port()
    marks = {n: f"{n}-{tmp_path}" for n in ("head", "a", "b")}
    try:
        _start_node(tmp_path, marks["head"], "--head", "--port", str(port), "--num-cpus", "0",
                    "--include-dashboard=false")  # fmt: skip
        for node in ("a", "b"):
            _start_node(tmp_path, marks[node], "--address", f"127.0.0.1:{port}", "--num-cpus", "2",
                        "--num-gpus", "1")  # fmt: skip
        yield f"127.0.0.1:{port}", marks
    finally:
        for mark in marks.values():
            kill_marked(mark)


def _trials(uri: str) -> list[dict]:
    try:
        return load_results(Location.parse(uri))[0].to_pylist()
    except (OSError, ValueError, CorruptResults):
        return []


def _wait_for(condition, driver, log: Path, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        assert driver.poll() is None, f"the search ended before {what}:\n{log.read_text()[-3000:]}"
        time.sleep(1.0)  # each look lists the experiment on S3: moto serves it from this process
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, **kwargs)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-3000:] + (exc.stderr or b"")[-3000:]
        raise AssertionError(f"{command[3:5]} timed out:\n{out.decode(errors='replace')}") from None


def _on_node(mark: str) -> bool:
    """Whether a trial runs on the node marked ``mark`` (its Ray worker carries the mark)."""
    return any(
        any(name in cmd for name in ("Trainable", "ImplicitFunc", "classic"))
        for cmd in marked_processes(mark).values()
    )


def _spans(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Trial id -> (first start, last end) of its iterations in ``rows``."""
    spans = {}
    for r in rows:
        start = r["timestamp"] - r["time_this_iter_s"]
        lo, hi = spans.get(r["trial_id"], (start, r["timestamp"]))
        spans[r["trial_id"]] = (min(lo, start), max(hi, r["timestamp"]))
    return spans


def test_a_multinode_search_on_s3_survives_a_lost_node_and_a_killed_driver(s3, ray_nodes, tmp_path):
    address, marks = ray_nodes
    uri = f"s3://{BUCKET}/exp"
    experiment = f"{uri}/{NAME}"
    args = search_command("classic", NAME, uri, "--address", address, n=TRIALS, iterations=ITERATIONS)
    # Half a GPU per trial: two trials share a node's GPU.
    args += ["--cpus-per-trial", "1", "--gpus-per-trial", "0.5", "--max-concurrent", "3"]
    args += ["--max-failures", "3", "--no-priors"]
    # PGD training for every trial: no trial finishes before node B has one that reported. No
    # image grids (tests/test_search_e2e.py checks them): this test is about where files go.
    args += ["--wandb-mode", "offline", "-s", "train_subset=256", "-s", "adv_train=pgd"]
    args += ["-s", "media_every=0"]
    first = tmp_path / "driver"
    first.mkdir()
    log = tmp_path / "driver.log"
    env = {**os.environ, "ORCHESTRATOR_PARQUET_FLUSH_S": "0", DRIVER_MARK: f"driver-{tmp_path}"}
    with open(log, "wb") as out:
        driver = subprocess.Popen(args, cwd=first, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # Node B is lost while one of its trials has reported but not finished.
            def b_mid_run() -> bool:
                rows = _trials(experiment)
                started = [r for r in rows if r["iterations"] >= 1]
                return (
                    bool(started)
                    and all(r["iterations"] <= ITERATIONS - 2 for r in rows)
                    and _on_node(marks["b"])
                )

            _wait_for(b_mid_run, driver, log, "a trial reported on node B")
            kill_marked(marks["b"])

            # The driver is killed once the lost node's trial failed over (Ray notices a lost
            # node only after its health checks fail, which can take longer than the trials on
            # node A need to finish), a trial finished, and others have not.
            def failed_over_and_one_finished() -> bool:
                rows = _trials(experiment)
                finished = sum(r["outcome"] == "completed" for r in rows)
                return any(r["num_failures"] >= 1 for r in rows) and 1 <= finished < TRIALS

            _wait_for(failed_over_and_one_finished, driver, log, "the failover and the first finished trial")
            driver.send_signal(signal.SIGKILL)
            driver.wait(30)
        finally:
            kill_marked(f"driver-{tmp_path}")
    before = {r["trial_id"]: r for r in _trials(experiment) if r["outcome"] == "completed"}

    # Resume from a fresh local folder: everything it needs is on S3.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    resumed = _run(
        [sys.executable, "-m", "orchestrator.cli", "resume", NAME, "--storage", uri, "--address", address],
        cwd=fresh,
        # Another machine's driver: its own cache, without the first driver's copy of the study.
        env={
            **os.environ,
            "ORCHESTRATOR_CACHE_DIR": str(tmp_path / "other-cache"),
            DRIVER_MARK: f"driver-{tmp_path}",
        },
        capture_output=True,
        timeout=300,
    )
    kill_marked(f"driver-{tmp_path}")
    assert resumed.returncode == 0, (resumed.stdout[-3000:] + resumed.stderr[-3000:]).decode(errors="replace")
    assert not list(fresh.iterdir()), "resume wrote into the local folder"
    # Tune deleting a checkpoint the killed driver had deleted is no error (compat shim).
    assert b"Error handling checkpoint" not in resumed.stderr + resumed.stdout

    trials = {t["trial_id"]: t for t in _trials(experiment)}
    brief = "\n".join(
        str((t["trial_id"], t["outcome"], t["iterations"], t["num_failures"], t.get("error")))
        for t in trials.values()
    )
    # A trial the killed driver had just started, before Ray Tune's saved state held it, is
    # recorded interrupted and not run again (docs/results-and-resume.md); every other trial
    # finishes.
    done = [t for t in trials.values() if t["outcome"] == "completed"]
    assert all(t["outcome"] in ("completed", "interrupted") for t in trials.values()), brief
    assert len(done) >= TRIALS and all(t["iterations"] == ITERATIONS for t in done), brief
    for tid, row in before.items():
        assert trials[tid]["last/val/acc"] == row["last/val/acc"], "a finished trial ran again"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]  # fmt: skip
    moved = [t for t in done if t["num_failures"] >= 1]
    assert moved, f"no trial was on the lost node B: {brief}"
    for trial in moved:  # continued from its S3 checkpoint: Tune's results never went back
        key = next(k for k in keys if k.endswith(f"_{trial['trial_id']}/result.json"))
        lines = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()
        its = [json.loads(line)["iteration"] for line in lines]
        # The iteration a lost node or the driver's SIGKILL interrupted runs again, and a
        # checkpoint Tune's saved state missed reports its result again on resume; but the
        # trial never goes back to an earlier iteration than it had reported (never restarts).
        why = f"{trial['trial_id']}: {its}\n{brief}\n{trial.get('restore_note')}"
        assert sorted(set(its)) == list(range(1, ITERATIONS + 1)) and its == sorted(its), why
    history = load_results(Location.parse(experiment))[1].to_pylist()
    for trial in done:
        its = sorted(h["iteration"] for h in history if h["trial_id"] == trial["trial_id"])
        assert its == list(range(1, ITERATIONS + 1)), (trial["trial_id"], its)
    # Two trials at once on one node's one GPU (half a GPU each).
    shared = []
    for node in {h["node_id"] for h in history}:
        spans = sorted(_spans([h for h in history if h["node_id"] == node]).values())
        shared += [a_hi > b_lo for (_, a_hi), (b_lo, _) in itertools.pairwise(spans)]
    assert any(shared), "no two trials shared a GPU"

    # Everything is on S3: checkpoints written by the worker nodes, Parquet, W&B files, settings.
    prefix = f"exp/{NAME}/"
    for name in ("trials.parquet", "history.parquet", "orchestrator.json", "study.db"):
        assert prefix + name in keys, name
    for tid in (t["trial_id"] for t in done):
        mine = [k for k in keys if k.startswith(prefix) and f"_{tid}/" in k]
        assert any("/checkpoint_" in k and k.endswith("state.pt") for k in mine), tid
        assert any("/wandb/offline-run-" in k and k.endswith(".wandb") for k in mine), tid
    # The study followed the experiment: the resumed driver fetched it from S3 and copied it back.
    assert list((tmp_path / "other-cache").rglob(f"{NAME}.db")), "the resumed driver's study copy"
    study_copy = tmp_path / "study-copy.db"
    study_copy.write_bytes(s3.get_object(Bucket=BUCKET, Key=prefix + "study.db")["Body"].read())
    states = {t["ray_trial_id"]: t["state"] for t in study_trials(f"sqlite:///{study_copy}", NAME)}
    assert all(states.get(t["trial_id"]) == "COMPLETE" for t in done), states
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert FAKE_SECRET.encode() not in body, key

    # The readers work on the S3 experiment.
    runner = CliRunner()
    listing = runner.invoke(cli, ["results", NAME, "--storage", uri, "--format", "json"])
    assert listing.exit_code == 0 and len(json.loads(listing.output)) == len(trials), listing.output
    report = runner.invoke(cli, ["report", NAME, "--storage", uri, "--out", str(tmp_path / "report")])
    assert report.exit_code == 0 and list((tmp_path / "report").glob("*.md")), report.output
    model = tmp_path / "model.pt"
    exported = runner.invoke(cli, ["export", NAME, "--storage", uri, "--out", str(model)])
    assert exported.exit_code == 0 and model.stat().st_size > 0, exported.output
    evaluated = runner.invoke(
        cli, ["evaluate", NAME, "--storage", uri, "--attack", "pgd", "-n", "20", "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout.strip().splitlines()[0])["n"] == 20
    assert f"exp/{NAME}/evaluations.parquet" in [
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"exp/{NAME}/").get("Contents", [])
    ]


@pytest.mark.parametrize(
    "storage,endpoint,needle",
    [
        ("s3://no-such-bucket/exp", None, "Bucket 'no-such-bucket' not found"),
        (f"s3://{BUCKET}/exp", "http://127.0.0.1:{closed}", "Could not connect"),
    ],
)
def test_a_missing_bucket_or_an_unreachable_endpoint_is_one_line_before_anything(
    s3, monkeypatch, tmp_path, storage, endpoint, needle
):
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.format(closed=_free_port()))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["search", "--space", "classic", "--storage", storage, "--name", "bad"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and storage in lines[0], result.output
    assert not list(tmp_path.iterdir())
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET), "something was written"


@pytest.fixture
def s3_with_auth(s3):
    """The S3 server checking signatures against its IAM users (moto's reset-auth): one user
    allowed everything on S3, whose key pair it yields; unknown or absent keys are refused."""
    import boto3

    iam = boto3.client("iam")
    iam.create_user(UserName="orchestrator")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="orchestrator", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="orchestrator")["AccessKey"]
    endpoint = os.environ["AWS_ENDPOINT_URL"]

    def enforce(count: str) -> None:
        url, headers = f"{endpoint}/moto-api/reset-auth", {"Content-Type": "text/plain"}
        request = urllib.request.Request(url, data=count.encode(), headers=headers, method="POST")
        urllib.request.urlopen(request)

    enforce("0")
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        enforce("inf")


@pytest.mark.parametrize("case", ["missing", "wrong"])
def test_missing_or_wrong_s3_credentials_are_one_line_before_anything(
    s3_with_auth, monkeypatch, tmp_path, case
):
    import boto3

    key_id, secret = s3_with_auth
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.aws here
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if case == "missing":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + "Z" * 16)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    storage = f"s3://{BUCKET}/exp"
    result = CliRunner().invoke(cli, ["search", "--space", "classic", "--storage", storage, "--name", "bad"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"storage {storage} is not writable" in lines[0], result.output
    assert ("no S3 credentials were found" in lines[0]) == (case == "missing"), lines[0]
    assert not list(work.iterdir())
    allowed = boto3.client("s3", aws_access_key_id=key_id, aws_secret_access_key=secret)
    assert "Contents" not in allowed.list_objects_v2(Bucket=BUCKET), "something was written"
    # The same check passes with the user's keys: the refusal above was about the credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    check_writable(storage)
