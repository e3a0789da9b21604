"""Shared fixtures: an isolated cache, W&B and Ray environment for every test session."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory):
    """Caches, W&B files and Ray's auth token stay inside a temporary folder."""
    root = tmp_path_factory.mktemp("env")
    saved = dict(os.environ)
    os.environ["ORCHESTRATOR_CACHE_DIR"] = str(root / "cache")
    os.environ["WANDB_DIR"] = str(root / "wandb")
    os.environ["WANDB_CACHE_DIR"] = str(root / "wandb-cache")
    os.environ["WANDB_DATA_DIR"] = str(root / "wandb-data")
    os.environ["WANDB_CONFIG_DIR"] = str(root / "wandb-config")
    os.environ["WANDB_SILENT"] = "true"
    os.environ["WANDB_MODE"] = "offline"  # never probe a W&B server from tests
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield root
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST files (ORCHESTRATOR_DATA_DIR); tests that need them skip without it."""
    root = os.environ.get("ORCHESTRATOR_DATA_DIR")
    if not root or not (Path(root) / "MNIST" / "raw").is_dir():
        pytest.skip("ORCHESTRATOR_DATA_DIR does not hold MNIST/raw")
    return Path(root)


def synthetic(**overrides):
    """A config for a fast run on the synthetic dataset (seconds on a CPU)."""
    base = {
        "dataset": "synthetic",
        "device": "cpu",
        "robust_n": 40,
        "test_robust_n": 40,
        "eval_subset": 100,
        "pgd_steps": 3,
        "apgd_steps": 3,
        "test_apgd_steps": 3,
        "test_apgd_targets": 2,
        "test_square_queries": 20,
        "pgd_step_size": 0.1,
        "train_subset": 256,
        "batch_size": 32,
    }
    base.update(overrides)
    return base


#: Set in a driver subprocess's environment, which every process it starts inherits (Ray starts
#: its GCS and raylet in sessions of their own, so a process session does not find them).
DRIVER_MARK = "ORCHESTRATOR_TEST_DRIVER"


def marked_processes(mark: str) -> dict[int, str]:
    """pid -> command line of this machine's processes whose environment carries ``mark``."""
    found = {}
    needle = f"{DRIVER_MARK}={mark}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if needle in environ.split(b"\0"):
                found[int(pid)] = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:80]
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            pass
    return found


def tracebacks(output: str) -> list[str]:
    """The tracebacks in a command's ``output``, each with the lines that follow it under the
    same prefix (a Ray worker's ``(name pid=N)``), less Ray's own on a worker it stops: Ray's
    SIGTERM handler raises SystemExit wherever the signal lands, and when that is a weakref
    callback Python prints it ("Exception ignored in"), whichever driver's output the worker's
    last lines reach."""
    lines, found = output.splitlines(), []
    for i, line in enumerate(lines):
        at = line.find("Traceback (most recent call last)")
        if at < 0:
            continue
        prefix, block = line[:at].rstrip(), [line]
        for following in lines[i + 1 :] if prefix else []:  # the driver's own: always counted
            if not following.startswith(prefix) or "Traceback (most recent call last)" in following:
                break
            block.append(following)
        text = "\n".join(block)
        if not (prefix and "in sigterm_handler" in text and "SystemExit" in text):
            found.append(text)
    return found


def kill_marked(mark: str) -> None:
    """SIGKILL what a killed driver left behind: its Ray processes (raylet, GCS, workers, agents)."""
    for pid in marked_processes(mark):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


_RAY_TMPDIRS: list[str] = []


def short_tmpdir() -> str:
    """A private Ray temp dir with a short path (Ray's socket paths must stay under 107 bytes),
    removed when the test session ends."""
    import tempfile

    path = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    _RAY_TMPDIRS.append(path)
    return path


#: Fixtures that start Ray (or a real search on it): a test using one is ``slow`` by that use.
RAY_FIXTURES = {"local_ray", "space_runs"}
#: CI fails an unmarked test whose setup, call or teardown takes longer (seconds): the inner
#: loop (``-m "not slow and not train"``) stays one. 1.6x the local 2-core machine's ~1.5 s worst.
INNER_LOOP_LIMIT_S = 2.5


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, an unmarked test phase slower than ``INNER_LOOP_LIMIT_S`` fails; so does an
    unmarked test that leaves Ray running in this process."""
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or report.failed:
        return
    if item.get_closest_marker("slow") or item.get_closest_marker("train"):
        return
    problem = None
    if report.duration > INNER_LOOP_LIMIT_S:
        problem = (
            f"an unmarked test took {report.duration:.1f} s in {report.when} (limit {INNER_LOOP_LIMIT_S} s): "
            "speed it up or mark it slow or train"
        )
    elif report.when == "call" and "ray" in sys.modules and sys.modules["ray"].is_initialized():
        problem = "an unmarked test left Ray running: mark it slow"
    if problem:
        report.outcome = "failed"
        report.longrepr = problem


def pytest_sessionfinish(session, exitstatus):
    """No Ray temporary folder is left behind (every Ray the tests started has stopped)."""
    import shutil

    for path in _RAY_TMPDIRS:
        shutil.rmtree(path, ignore_errors=True)


#: A fake W&B key present in the environment of every Ray worker: tests assert it never lands
#: in a file.
FAKE_WANDB_KEY = "feedc0de" * 5


@pytest.fixture(scope="session")
def local_ray(isolated_environment):
    """One local Ray instance (2 CPUs) shared by the in-process search tests."""
    from orchestrator import ray_runtime

    os.environ["WANDB_API_KEY"] = FAKE_WANDB_KEY
    os.environ["RAY_TMPDIR"] = short_tmpdir()
    started = ray_runtime.start(None, ray_runtime.worker_env("offline"), num_cpus=2)
    yield
    ray_runtime.stop(started)


#: The password of the test PostgreSQL's user: tests assert it never lands in a file.
PG_PASSWORD = "s3cret-pg-" + "c0ffee" * 3


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server (initdb + pg_ctl from the system's PostgreSQL; `.ci/run`
    installs it) on a free local port, password authentication only; its URL (with the
    password). Skips where PostgreSQL or psycopg is not installed."""
    import glob
    import shutil
    import socket
    import subprocess
    import tempfile

    pytest.importorskip("psycopg")
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if not found:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = Path(found).resolve().parent
    # Not under pytest's temporary folder: its 0700 parents keep the postgres user out.
    root = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": True}
    init = [str(bindir / "initdb"), "-D", str(data), "-U", "orch", "-A", "scram-sha-256"]
    subprocess.run([*run_as, *init, f"--pwfile={pwfile}"], **quiet)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg_ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run([*pg_ctl, "-o", options, "-l", str(root / "log"), "-w", "start"], **quiet)
    try:
        yield f"postgresql://orch:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], **{**quiet, "check": False})
        shutil.rmtree(root, ignore_errors=True)


def tiny_trial_config(space: str) -> dict:
    """A trial of trainable ``space`` in a few seconds on a CPU (its catalog's smoke settings),
    drawing media every iteration."""
    from trainables.catalog import smoke_config

    return {**smoke_config(space), "media_every": 1}


def search(tmp_path, space, name, wandb_mode="offline", **kw):
    """A real search, in process, on the shared local Ray (W&B offline unless a test that
    reads no W&B file asks for ``wandb_mode="disabled"``: ~2 s a trial less)."""
    from orchestrator.plan import plan_search
    from orchestrator.search import run_search
    from orchestrator.settings import SearchSettings
    from search_spaces import SPACES

    settings = SearchSettings(
        space=space,
        name=name,
        storage=str(tmp_path),
        config=tiny_trial_config(SPACES[space].trainable),
        wandb_mode=wandb_mode,
        **kw,
    )
    plan = plan_search(settings)
    return plan, run_search(plan, echo=lambda line: None)


SPACE_NAMES = ["classic", "wgan_gp", "adaptive_ratio"]
#: Three classic trials, enough for parameter importances in its report; two elsewhere.
SPACE_TRIALS = {"classic": 3, "wgan_gp": 2, "adaptive_ratio": 2}
#: Optuna's seed per space: with seed 2 the sampled adaptive_ratio trial uses the image generator
#: beside the prior's gradient one (both families in one search, checked in test_search_e2e)
#: and costs 5 s a cycle here; seed 0's (gradient generator, k 8) cost 20.
SPACE_SEEDS = {"adaptive_ratio": 2}


@pytest.fixture(scope="session")
def space_runs(local_ray, tmp_path_factory):
    """One real search per space (``SPACE_TRIALS`` trials x 2 iterations: its prior first, then
    what Optuna proposes), shared by the tests below."""
    root = tmp_path_factory.mktemp("spaces")
    runs = {}
    for space in SPACE_NAMES:
        runs[space] = search(
            root,
            space,
            f"e2e-{space}",
            num_samples=SPACE_TRIALS[space],
            max_iterations=2,
            scheduler="fifo",
            seed=SPACE_SEEDS.get(space, 0),
        )
    return root, runs


def search_command(space: str, name: str, storage, *extra: str, n: int = 4, iterations: int = 3) -> list[str]:
    """``orchestrator search`` as a subprocess command line with the tiny trial settings."""
    import json
    import sys

    sets = [
        a for key, value in tiny_trial_config(space).items() for a in ("-s", f"{key}={json.dumps(value)}")
    ]
    return [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "search",
        "--space",
        space,
        "-n",
        str(n),
        "--max-iterations",
        str(iterations),
        "--scheduler",
        "fifo",
        "--storage",
        str(storage),
        "--name",
        name,
        *sets,
        *extra,
    ]
