"""One driver per experiment: a lease file that a search or resume holds while it runs.

Two drivers on one experiment train the same trials into one folder and rewrite each other's
tables, so ``search``, ``resume`` and ``resume --fresh`` take the experiment's lease first and a
second driver is refused with one line before it touches anything. The lease is a small JSON
file, ``driver.lock``, in the experiment's folder (local, NFS or ``s3://``): the holder's host,
pid and a random token, renewed every :data:`RENEW_S` seconds by a daemon thread.

A lease is *stale*, and taken over with a notice, when its holder is a process of this host
that no longer runs, or when it has not been renewed for :data:`EXPIRE_S` seconds (a driver on
another machine that was killed, or lost). Local folders are claimed with an exclusive create;
object stores have no such operation, so there the lease is written and read back after a
moment, and the later writer of two simultaneous claims wins (both check the read-back token).

Readers (``results``, ``report``, ``dashboard``) never take the lease; :func:`holder` tells them
that a search is running so that they can say their tables are still growing.

A file that more than one command writes besides the driver (``evaluations.parquet``: every
``orchestrator evaluate``, during a search or not) has a lease of its own, taken for the moment
of one read-merge-write with :func:`briefly` (a writer waits for another's merge to end).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow.fs as pafs

from orchestrator.errors import UserError
from orchestrator.storage import TMP_SUFFIX, Location

LOCK_FILE = "driver.lock"
#: How often the holder renews its lease, and after how long without renewal it is stale.
RENEW_S = 20.0
EXPIRE_S = 120.0
#: Object stores: how long a claim waits before reading its lease back.
SETTLE_S = 1.0

#: Experiments whose lease this process holds: location uri -> (token, depth).
_held: dict[str, list] = {}
_held_lock = threading.Lock()


class ExperimentBusy(UserError):
    """Another live driver holds the experiment (exit code 2, nothing touched)."""


def _this_host() -> str:
    return socket.gethostname()


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read(loc: Location) -> dict[str, Any] | None:
    try:
        value = json.loads(loc.read_bytes())
    except (FileNotFoundError, OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def describe(lease: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(lease.get("started", 0)))
    return (
        f"{lease.get('command', 'a driver')} (pid {lease.get('pid')} on {lease.get('host')}, since {started})"
    )


def stale_reason(lease: dict[str, Any], now: float | None = None) -> str | None:
    """Why ``lease`` no longer holds the experiment, or None while its holder may be alive."""
    now = time.time() if now is None else now
    if lease.get("host") == _this_host():
        pid = lease.get("pid")
        if not isinstance(pid, int) or not _pid_running(pid):
            return f"its process {pid} no longer runs"
        return None
    renewed = float(lease.get("renewed", 0) or 0)
    if now - renewed > EXPIRE_S:
        return f"not renewed for {now - renewed:.0f} s"
    return None


def holder(experiment: Location) -> dict[str, Any] | None:
    """The live lease on ``experiment`` (None when no driver holds it)."""
    lease = _read(experiment.child(LOCK_FILE))
    if lease is None or stale_reason(lease) is not None:
        return None
    return lease


def _claim_local(loc: Location, data: bytes) -> bool:
    """Create the lease file with its content in one step (written aside, then hard-linked), so
    that no other claimant ever reads it empty and takes it for a killed claim's leftover."""
    os.makedirs(os.path.dirname(loc.path), exist_ok=True)
    tmp = f"{loc.path}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    _write_synced(tmp, data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.link(tmp, loc.path)
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: an exclusive create, then the content
        try:
            _write_synced(loc.path, data, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
    finally:
        os.remove(tmp)
    return True


def _write_synced(path: str, data: bytes, flags: int) -> None:
    with os.fdopen(os.open(path, flags, 0o644), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _claim(loc: Location, lease: dict[str, Any], echo: Callable[[str], None], command: str) -> None:
    data = json.dumps(lease).encode()
    local = isinstance(loc.fs, pafs.LocalFileSystem)
    for _ in range(3):
        current = _read(loc)
        if current is not None:
            reason = stale_reason(current)
            if reason is None:
                raise ExperimentBusy(
                    f"{command}: the experiment is in use by {describe(current)}; run this once "
                    "it has stopped (`orchestrator results` reads the experiment meanwhile)"
                )
            echo(f"taking over the lease of {describe(current)}: {reason}")
            loc.delete()
        elif loc.exists():  # unreadable (half written by a killed claim): treat as stale
            loc.delete()
        if local:
            if _claim_local(loc, data):
                return
            continue
        loc.write_bytes(data)
        time.sleep(SETTLE_S)
        back = _read(loc)
        if back is not None and back.get("token") == lease["token"]:
            return
    raise ExperimentBusy(
        f"{command}: another driver is claiming the experiment at this moment; nothing was run"
    )


def _renew(loc: Location, lease: dict[str, Any], stop: threading.Event) -> None:
    while not stop.wait(RENEW_S):
        current = _read(loc)
        if current is not None and current.get("token") != lease["token"]:
            return  # taken over (this driver was presumed dead): leave the new holder alone
        lease["renewed"] = time.time()
        with contextlib.suppress(OSError):
            loc.write_bytes(json.dumps(lease).encode())


@contextlib.contextmanager
def briefly(experiment: Location, lock_file: str, command: str, wait_s: float = 120.0) -> Iterator[None]:
    """Hold the lease ``lock_file`` of ``experiment`` for a short write, waiting up to ``wait_s``
    seconds while another live process holds it (then :class:`ExperimentBusy`)."""
    deadline = time.monotonic() + wait_s
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(hold(experiment, command, lambda line: None, lock_file))
                break
            except ExperimentBusy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield


@contextlib.contextmanager
def hold(
    experiment: Location, command: str, echo: Callable[[str], None] = print, lock_file: str = LOCK_FILE
) -> Iterator[None]:
    """Hold ``experiment``'s lease (``lock_file``: the driver's, or another one's) while the block
    runs (re-entrant within this process); :class:`ExperimentBusy` when a live process holds it."""
    loc = experiment.child(lock_file)
    with _held_lock:
        mine = _held.get(loc.uri)
        if mine is not None:
            mine[1] += 1
    if mine is not None:
        try:
            yield
        finally:
            with _held_lock:
                mine[1] -= 1
        return
    now = time.time()
    lease = {
        "host": _this_host(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "command": command,
        "started": now,
        "renewed": now,
    }
    _claim(loc, lease, echo, command)
    with _held_lock:
        _held[loc.uri] = [lease["token"], 1]
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(loc, lease, stop), name="driver-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        with _held_lock:
            _held.pop(loc.uri, None)
        current = _read(loc)
        if current is None or current.get("token") == lease["token"]:
            with contextlib.suppress(OSError):
                loc.delete()
