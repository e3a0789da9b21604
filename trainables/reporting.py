"""Where a trial's reports and checkpoints go.

- :class:`ConsoleReporter`: ``orchestrator train``: a progress line per iteration, progress
  within the iteration on stderr (training batches, then validation and test), and an optional
  local checkpoint directory to resume from.
- :class:`MemoryReporter`: keeps reports and the last checkpoint in memory (tests, reference
  models, notebooks).
- Searches report to Ray Tune through ``orchestrator.tune_trainable.TuneReporter``; nothing in
  ``trainables/`` imports Ray.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from trainables.metrics import RESTORE_NOTE  # noqa: F401 - re-exported
from trainables.runtime import Runtime
from trainables.safe_load import load_weights

CHECKPOINT_FILE = "state.pt"


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 CHW image -> PNG bytes (small enough to travel inside a report)."""
    from torchvision.io import encode_png as _encode

    return bytes(_encode(image.detach().cpu().to(torch.uint8).contiguous()).numpy().tobytes())


def save_checkpoint(state: dict, directory: str | os.PathLike) -> Path:
    """Write ``state`` to ``directory/state.pt`` atomically (a crash never leaves half a file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)
    return directory / CHECKPOINT_FILE


def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by this project: tensors, plain data and numpy's random state
    only (:func:`trainables.safe_load.load_weights`; a file that would run code is refused)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    return load_weights(path)


_STATE_KEYS = ("program", "rng", "iteration")


def load_first_readable(
    candidates: Sequence[tuple[str, Callable[[], dict]]],
) -> tuple[dict | None, str | None]:
    """The first checkpoint of ``candidates`` (``(name, load)``, newest first) that loads and
    holds a trial's state, and a note when a newer one had to be skipped (``None`` if the
    newest was fine). No readable checkpoint at all: ``(None, note)``, the trial starts over."""
    skipped: list[str] = []
    for name, load in candidates:
        try:
            state = load()
            if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
                raise ValueError("not a trial state")
        except Exception as exc:  # truncated, not a torch file, unpickling error, ...
            lines = [line for line in str(exc).splitlines() if line.strip()]
            cause = f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
            skipped.append(f"{name} ({cause})")
            continue
        if not skipped:
            return state, None
        return state, f"damaged checkpoint skipped: {'; '.join(skipped)}; resumed from {name}"
    if not skipped:
        return None, None
    return (
        None,
        f"damaged checkpoint skipped: {'; '.join(skipped)}; no readable checkpoint, restarted from scratch",
    )


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without media payloads."""
    return {k: v for k, v in metrics.items() if not k.startswith("media/")}


class Reporter:
    """Base: no checkpoint to resume from, reports dropped."""

    #: Set by :meth:`load_checkpoint` when the checkpoint it loaded may be newer than the last
    #: result the search received (its report was lost): the trial reports it again.
    replay: bool = False

    def start(self, runtime: Runtime, budget: int) -> None:
        """Called once the trial's device and budget are known, before data is loaded."""

    def load_checkpoint(self) -> dict | None:
        return None

    def progress(self, iteration: int, phase: str, done: int = 0, total: int | None = None) -> None:
        """Where iteration ``iteration`` stands: ``phase`` is ``training`` (``done`` of
        ``total`` batches), ``validation`` or ``test``. Called at most every few tenths of a
        second; the default shows nothing."""

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        raise NotImplementedError


class MemoryReporter(Reporter):
    """Keeps every report; checkpoints are serialised (as Tune would) and can seed a resume."""

    def __init__(self, resume_from: bytes | None = None):
        self.reports: list[dict[str, Any]] = []
        self.checkpoint: bytes | None = resume_from

    def load_checkpoint(self) -> dict | None:
        if self.checkpoint is None:
            return None
        return load_weights(self.checkpoint, name="the checkpoint")

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        self.reports.append(metrics)
        if checkpoint is not None:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            self.checkpoint = buffer.getvalue()


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


class ConsoleReporter(Reporter):
    """One progress line per iteration; checkpoints to ``checkpoint_dir`` when given."""

    def __init__(
        self,
        name: str,
        budget: int,
        unit: str,
        headline: tuple[str, ...],
        checkpoint_dir: str | os.PathLike | None = None,
        echo: Callable[[str], None] | None = None,
    ):
        self.name, self.budget, self.unit, self.headline = name, budget, unit, headline
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.echo = echo or (lambda line: print(line, flush=True))
        self.reports: list[dict[str, Any]] = []
        self.stream = sys.stderr
        self._bar_open = False  # a \r progress bar is on the terminal's last line
        self._iteration_start = 0.0
        self._last_line = 0.0
        self._iteration = 0

    def start(self, runtime: Runtime, budget: int) -> None:
        self.budget = budget
        amp = f", {str(runtime.amp_dtype).replace('torch.', '')} autocast" if runtime.amp_dtype else ""
        self.echo(f"{self.name}: device {runtime.device}{amp}")

    def load_checkpoint(self) -> dict | None:
        if self.checkpoint_dir and (self.checkpoint_dir / CHECKPOINT_FILE).exists():
            path = self.checkpoint_dir / CHECKPOINT_FILE
            state, note = load_first_readable([(str(path), lambda: load_checkpoint_file(path))])
            if note:
                self.echo(f"{self.name}: {note}")
            if state is not None:
                where = f"{self.unit} {state['iteration']} from {self.checkpoint_dir}"
                self.echo(f"{self.name}: resuming after {where}")
            return state
        return None

    #: Seconds between progress lines when stderr is not a terminal (logs, pipes).
    LINE_EVERY_S = 30.0

    def progress(self, iteration: int, phase: str, done: int = 0, total: int | None = None) -> None:
        now = time.monotonic()
        if iteration != self._iteration:
            self._iteration, self._iteration_start, self._last_line = iteration, now, now
        elapsed = now - self._iteration_start
        head = f"{self.name} {self.unit} {iteration}/{self.budget}"
        if phase == "training" and total:
            frac = min(done / total, 1.0)
            bar = "#" * round(20 * frac) + "." * (20 - round(20 * frac))
            text = f"{head} training [{bar}] {done}/{total} batches, {elapsed:.0f}s"
        elif phase == "training":
            text = f"{head} training: {done} batches, {elapsed:.0f}s"
        else:
            text = f"{head} {phase}..., {elapsed:.0f}s"
        if self.stream.isatty():
            self.stream.write("\r" + text.ljust(78)[:100])
            self.stream.flush()
            self._bar_open = True
        elif now - self._last_line >= self.LINE_EVERY_S:
            self._last_line = now
            print(text, file=self.stream, flush=True)

    def _close_bar(self) -> None:
        if self._bar_open:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
            self._bar_open = False

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        self._close_bar()
        metrics = scalar_metrics(metrics)
        self.reports.append(metrics)
        shown = [f"{k} {_format(metrics[k])}" for k in self.headline if k in metrics]
        if metrics.get("diverged"):
            shown.append("DIVERGED (non-finite loss)")
        seconds = metrics.get("time/iteration_s")
        tail = f" | {seconds:.1f}s" if isinstance(seconds, float) else ""
        progress = f"{self.unit} {metrics['iteration']}/{self.budget}"
        self.echo(f"{self.name} {progress} | {'  '.join(shown)}{tail}")
        if checkpoint is not None and self.checkpoint_dir is not None:
            save_checkpoint(checkpoint, self.checkpoint_dir)


def console_reporter(spec) -> ConsoleReporter:
    """Progress lines on stdout for a trial of ``spec`` run on its own."""
    return ConsoleReporter(spec.name, 0, spec.unit, spec.headline)


def final_json(metrics: dict[str, Any]) -> str:
    """The final report as one JSON line (media dropped, non-finite numbers as null)."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in scalar_metrics(metrics).items()
    }
    return json.dumps(clean, sort_keys=True)
