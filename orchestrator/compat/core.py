"""Ray core's private internals, each behind one named function (the rest of the compatibility
seam: :mod:`orchestrator.compat`).

- a local Ray whose processes a signal to the driver's process group does not reach
  (:func:`ray_processes_in_own_session`): ``ray.init`` starts the GCS and raylet (which starts
  the workers) through ``ray._private.services.ConsolePopen``; ``timeout`` and a terminal send
  SIGTERM / SIGINT to the whole group, which killed the GCS before the driver could stop Tune;
- a cluster's alive nodes and their resources without joining it as a driver
  (:func:`alive_node_resources`: ``ray._raylet.GcsClient``);
- a cluster launcher file checked as ``ray up`` checks it (:func:`prepare_cluster_config`:
  ``ray.autoscaler._private.util.prepare_config`` and ``validate_config``);
- token authentication turned on after Ray read its config (:func:`reload_auth_mode`:
  ``ray._raylet.Config.initialize``, what Ray's own ``_enable_token_auth`` calls);
- whether Ray Tune's SIGUSR1 handler is installed (:func:`is_tune_signal_handler`: Tune has no
  public way to ask; its handler is the function ``signal_interrupt_tune_run``).

None of these imports Ray before it is called.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

#: The name of the SIGUSR1 handler ``Tuner.fit`` installs.
TUNE_SIGNAL_HANDLER = "signal_interrupt_tune_run"


@contextlib.contextmanager
def ray_processes_in_own_session() -> Iterator[None]:
    """While the block runs, processes Ray starts begin a session (and process group) of their
    own, so that only the driver receives its group's SIGTERM or SIGINT and stops them itself
    (they still die with the driver: Ray ties them to it with ``PR_SET_PDEATHSIG``)."""
    from ray._private import services

    original = services.ConsolePopen

    class OwnSession(original):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnSession
    try:
        yield
    finally:
        services.ConsolePopen = original


def alive_node_resources(address: str, timeout: float = 10) -> list[dict[str, float]]:
    """The total resources of each alive node of the Ray cluster whose GCS is at ``address``."""
    import ray._raylet
    from ray.core.generated import gcs_pb2

    client = ray._raylet.GcsClient(address=address)
    nodes = client.get_all_node_info(timeout=timeout).values()
    alive = gcs_pb2.GcsNodeInfo.GcsNodeState.Value("ALIVE")
    return [dict(n.resources_total) for n in nodes if n.state == alive]


def prepare_cluster_config(config: dict[str, Any]) -> dict[str, Any]:
    """A cluster launcher config with Ray's defaults merged, validated against Ray's schema as
    ``ray up`` does (raises on errors)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def is_tune_signal_handler(handler) -> bool:
    """Whether ``handler`` is the SIGUSR1 handler Ray Tune installs while ``Tuner.fit`` runs."""
    return callable(handler) and getattr(handler, "__name__", "") == TUNE_SIGNAL_HANDLER


def reload_auth_mode() -> None:
    """Make this process's Ray see a ``RAY_AUTH_MODE`` set after Ray read its config (Ray caches
    it on import; its own ``_enable_token_auth`` re-initialises the config the same way)."""
    import ray._raylet

    ray._raylet.Config.initialize("")


def check() -> list[str]:
    """What is missing from the installed Ray core (empty when everything here exists)."""
    import ray._raylet
    from ray._private import services
    from ray.autoscaler._private import util
    from ray.tune import tune as tune_module

    missing = []
    if "ConsolePopen(" not in inspect.getsource(services.start_ray_process):
        missing.append("ray._private.services.start_ray_process starting processes with ConsolePopen")
    if not hasattr(ray._raylet, "GcsClient"):
        missing.append("ray._raylet.GcsClient")
    if not callable(getattr(getattr(ray._raylet, "Config", None), "initialize", None)):
        missing.append("ray._raylet.Config.initialize")
    for name in ("prepare_config", "validate_config"):
        if not callable(getattr(util, name, None)):
            missing.append(f"ray.autoscaler._private.util.{name}")
    if f"def {TUNE_SIGNAL_HANDLER}" not in inspect.getsource(tune_module):
        missing.append(f"Ray Tune's SIGUSR1 handler {TUNE_SIGNAL_HANDLER}")
    return missing
