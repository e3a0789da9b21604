"""Starting or joining Ray for a search.

A local run starts a private Ray instance (``address="local"``: never attaches to some other
instance found through ``/tmp/ray``), without the dashboard, with token authentication off
(``RAY_AUTH_MODE=disabled``, unless the user set it) and a bounded object store. ``--address``
joins a running cluster only once it is known to be one: something must listen there, and for
a GCS address (``HOST:PORT``, ``auto``) Ray's GCS must answer within ``ADDRESS_TIMEOUT_S``
(asked from a subprocess, because Ray's GCS client waits for ever on a port where something
else listens), which also tells the alive nodes' CPUs and GPUs. A wrong address fails with one
line, before Ray starts and before anything is written.

A head with token authentication (``RAY_AUTH_MODE=token``, Ray's default for clusters it starts
locally since 2.59) needs the cluster's token: Ray reads it from ``RAY_AUTH_TOKEN``, the file
``RAY_AUTH_TOKEN_PATH`` (``--ray-token-file``) or ``~/.ray/auth_token``, but for an explicit
address only in token mode; :func:`join_auth` turns token mode on when a token is given and the
mode is unset. A missing or refused token fails with one line, before anything is written. The
token never reaches the workers' environment, the settings or any file of the experiment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from orchestrator import interrupt, relocation
from orchestrator.errors import UserError

#: Environment handed to every Ray worker of the job (never the W&B API key).
PASS_THROUGH = (
    "ORCHESTRATOR_CACHE_DIR",
    "ORCHESTRATOR_DATA_DIR",
    "WANDB_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_DATA_DIR",
    "WANDB_CONFIG_DIR",
    "WANDB_BASE_URL",
)
TUNE_ENV = {
    # Our trials checkpoint every iteration on purpose; the warning about it is noise.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # Tune's default loggers would write PNG payloads into result.json / progress.csv; we add
    # JSON and CSV loggers that skip media (orchestrator.callbacks).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


#: glibc heaps per trial worker. A reused worker runs each trial in a new thread; with glibc's
#: default (up to 8 heaps per core) and the raised trim threshold of a trial
#: (``trainables.runtime.keep_freed_memory``), every heap kept a trial's peak: idle trials' workers
#: grew from 0.75 to 1.8 GB over 30 trials and 16 of them ran out of 24 GB; with 2, flat at
#: 0.85 GB (benchmarks/driver_scale.py, docs/performance.md).
MALLOC_ARENAS = "2"


def worker_env(wandb_mode: str) -> dict[str, str]:
    env = {"WANDB_MODE": wandb_mode, "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env["MALLOC_ARENA_MAX"] = os.environ.get("MALLOC_ARENA_MAX", MALLOC_ARENAS)
    for key in PASS_THROUGH:
        if os.environ.get(key):
            env[key] = os.environ[key]
    return {**env, **relocation.worker_env()}


def _host_port(address: str) -> tuple[str, int]:
    bare = address.split("://", 1)[-1]
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or 'auto'")
    return host, int(port)


def resolve_address(address: str) -> str:
    """``auto`` -> the address of the cluster running on this machine (or ``$RAY_ADDRESS``)."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    current = Path("/tmp/ray/ray_current_cluster")
    if current.exists() and current.read_text().strip():
        return current.read_text().strip()
    raise UserError(
        "--address auto: no running Ray cluster found here; "
        "start one with `ray start --head` or drop --address"
    )


#: Seconds a Ray GCS gets to answer (env: ORCHESTRATOR_ADDRESS_TIMEOUT_S).
ADDRESS_TIMEOUT_S = 15.0


AUTH_ENV = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def join_auth() -> bool:
    """Token mode for joining a head, when a token is given (environment or Ray's default
    file) and ``RAY_AUTH_MODE`` is unset; True when a token will be sent."""
    given = any(os.environ.get(k) for k in AUTH_ENV) or (Path.home() / ".ray" / "auth_token").is_file()
    if given and not os.environ.get("RAY_AUTH_MODE"):
        os.environ["RAY_AUTH_MODE"] = "token"
    return given and os.environ.get("RAY_AUTH_MODE") == "token"


def _auth_refused(address: str) -> UserError:
    if join_auth():
        return UserError(f"--address {address}: the Ray head refused this driver's auth token (wrong token?)")
    return UserError(
        f"--address {address}: the Ray head requires token authentication; give its token with "
        "--ray-token-file (the head's ~/.ray/auth_token) or RAY_AUTH_TOKEN"
    )


def check_address(address: str, timeout: float = 3.0) -> str:
    """The resolved address if something listens there; one-line :class:`UserError` if not."""
    resolved = resolve_address(address)
    host, port = _host_port(resolved)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(
            f"--address {address}: cannot reach a Ray cluster at {host}:{port} ({exc.strerror or exc})"
        ) from None
    return resolved


def cluster_nodes(address: str, timeout: float | None = None) -> list[dict[str, float]]:
    """The resources (``CPU``, ``GPU``, ...) of each alive node of the Ray cluster whose GCS is
    at ``address`` (resolved, not ``ray://``); one-line :class:`UserError` when no Ray GCS
    answers there within ``timeout`` seconds."""
    timeout = timeout or float(os.environ.get("ORCHESTRATOR_ADDRESS_TIMEOUT_S", ADDRESS_TIMEOUT_S))
    join_auth()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.ray_runtime", address],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise UserError(
            f"--address {address}: something listens there, but no Ray head answered within "
            f"{timeout:g} s (a wrong port, or not Ray?); the GCS port of `ray start --head` is 6379"
        ) from None
    lines = done.stdout.strip().splitlines()
    if "InvalidAuthToken" in done.stderr or "AuthenticationError" in done.stderr:
        raise _auth_refused(address)
    if done.returncode != 0 or not lines:
        cause = (done.stderr.strip().splitlines() or ["no answer"])[-1][:300]
        raise UserError(f"--address {address}: not a usable Ray head ({cause})")
    return json.loads(lines[-1])


def _print_nodes(address: str) -> None:
    """``python -m orchestrator.ray_runtime ADDRESS``: the alive nodes' resources as JSON."""
    from orchestrator.compat.core import alive_node_resources

    print(json.dumps(alive_node_resources(address)))


def start(
    address: str | None,
    env: dict[str, str],
    *,
    num_cpus: int | None = None,
) -> bool:
    """Start a local Ray or join ``address``; returns True when this process started Ray."""
    import ray

    os.environ.update(TUNE_ENV)
    for key, value in env.items():  # the driver's own W&B logging actors read these too
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": env}
    if address:
        if join_auth():
            from orchestrator.compat.core import reload_auth_mode

            reload_auth_mode()
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        interrupt.reclaim()
        return True
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from orchestrator.compat.core import ray_processes_in_own_session

    with ray_processes_in_own_session():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            runtime_env=runtime_env,
            object_store_memory=512 * 1024**2,
            log_to_driver=True,
            configure_logging=True,
            logging_level="warning",
        )
    interrupt.reclaim()  # ray.init replaced the SIGINT/SIGTERM handlers of a running search
    return True


def stop(started: bool) -> None:
    import ray

    if started and ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    _print_nodes(sys.argv[1])
