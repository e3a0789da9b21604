"""Ctrl-C, SIGTERM and SIGHUP during a search: the first stops it gracefully, a second forces.

Ray Tune's own SIGINT handler would end the run quietly (exit code 0, its Python
``Tuner.restore`` hint, interrupted trials recorded as stopped). Instead, while a search runs,
:func:`stop_requests` handles SIGINT, SIGTERM and SIGHUP (a closed terminal or a dropped SSH
session; Ray's own processes run in sessions of their own and never get it) itself: the first
signal is remembered (:func:`requested`) and handed to Tune as SIGUSR1, Tune's documented
equivalent, so Tune saves its experiment state with the running trials still unfinished, stops
their actors (they keep their last checkpoint) and returns; the Parquet writer records those
trials as ``interrupted`` and the command exits with 128 + the signal number (130 for Ctrl-C,
143 for SIGTERM, 129 for SIGHUP), printing ``orchestrator resume NAME``. After SIGHUP, standard
output and error that were the terminal go to /dev/null (a write to a terminal that hung up
fails); the rows and the hint are in the experiment. A second signal raises
``KeyboardInterrupt`` at once.

``ray.init`` installs handlers of its own for SIGTERM (Python's ``sys.exit``, the local node's
shutdown, and the core worker's C++ failure handler, which aborts with exit code 134), so
:func:`reclaim` installs this module's again once Ray has started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

#: The signal that asked the running search to stop (0: none).
_received = 0
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The handler of the running :func:`stop_requests` block, and the signals it owns.
_active: tuple[Callable, tuple[int, ...]] | None = None


def requested() -> int:
    """The signal number that interrupted the current search, or 0."""
    return _received


def _tune_is_listening() -> bool:
    """Whether Ray Tune's SIGUSR1 handler is installed (it is while ``Tuner.fit`` runs)."""
    from orchestrator.compat.core import is_tune_signal_handler

    return is_tune_signal_handler(signal.getsignal(signal.SIGUSR1))


@contextlib.contextmanager
def _handled(handle: Callable, also: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
    """``handle`` for SIGINT, SIGTERM and SIGHUP while the block runs (those ignored at the start stay
    ignored: nohup's intent), every previous handler back at its end (``also``: more signals
    whose handlers the block may change); yields the signals it handles. Outside the main
    thread, where Python cannot install handlers, nothing changes."""
    global _received
    _received = 0
    if threading.current_thread() is not threading.main_thread():
        yield ()
        return
    previous = {s: signal.getsignal(s) for s in (*_SIGNALS, *also)}
    owned = tuple(s for s in _SIGNALS if previous[s] is not signal.SIG_IGN)
    for s in owned:
        signal.signal(s, handle)
    try:
        yield owned
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _leave_hung_up_terminal() -> None:
    """Point standard output and error at /dev/null where they are a terminal (after SIGHUP
    it is gone, and a write to it would raise in the middle of the graceful stop)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            if os.isatty(fd):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


@contextlib.contextmanager
def stop_requests(echo: Callable[[str], None]) -> Iterator[None]:
    """Handle SIGINT / SIGTERM / SIGHUP as described in the module docstring while the block runs."""
    global _active

    def handle(signum, frame):
        global _received
        if signum == signal.SIGHUP:
            _leave_hung_up_terminal()
        if _received or not _tune_is_listening():
            _received = _received or signum
            raise KeyboardInterrupt
        _received = signum
        echo(
            f"{signal.Signals(signum).name}: stopping the search; running trials keep their last "
            "checkpoint (Ctrl-C again forces)"
        )
        os.kill(os.getpid(), signal.SIGUSR1)

    from orchestrator.compat import tune as tune_compat

    tune_compat.quiet_interrupt_hints()
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    with _handled(handle, also=(signal.SIGUSR1,)) as owned:
        if not owned and threading.current_thread() is not threading.main_thread():
            yield
            return
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # Tune installs its own when fit starts
        _active = (handle, owned)
        try:
            yield
        finally:
            _active = None


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Outside a search (``orchestrator evaluate``): SIGTERM and SIGHUP, like Ctrl-C, raise
    ``KeyboardInterrupt`` in the main thread, so the command stops where it is and keeps what
    it saved; :func:`requested` names the signal. Ignored signals stay ignored."""

    def handle(signum, frame):
        global _received
        if signum == signal.SIGHUP:
            _leave_hung_up_terminal()
        _received = _received or signum
        raise KeyboardInterrupt

    with _handled(handle):
        yield


def reclaim() -> None:
    """Install the running :func:`stop_requests` handler again (after ``ray.init`` replaced it)."""
    if _active is None or threading.current_thread() is not threading.main_thread():
        return
    handle, owned = _active
    for s in owned:
        signal.signal(s, handle)
