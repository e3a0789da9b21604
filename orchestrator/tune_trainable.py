"""A trial inside Ray Tune: the function trainable a search runs, and where its reports go.

:func:`tune_trainable` wraps a trainable's one trial loop (``trainables.trial.run_trial``) for
Ray Tune. It imports the trainable's module by path inside the worker, so a trainable registered
in the driver's catalog from outside the ``trainables`` package runs without being registered
in the worker.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from typing import Any

from orchestrator.compat import tune as tune_compat
from orchestrator.compat.tune import checkpoint_folders
from orchestrator.relocation import here
from trainables.catalog import TrainableInfo
from trainables.reporting import (
    RESTORE_NOTE,
    Reporter,
    load_checkpoint_file,
    load_first_readable,
    save_checkpoint,
)
from trainables.runtime import Runtime, cap_gpu_memory


class TuneReporter(Reporter):
    """Reports to Ray Tune; checkpoints are persisted by Tune to the experiment's storage.

    Keys are ordered clean and APGD validation accuracy first, then the trainable's headline
    metrics: Tune's progress table shows the first few metrics of a report. Caps CUDA memory to
    the trial's share of a GPU.
    """

    def __init__(self, headline: tuple[str, ...] = ()):
        self.order = ("val/acc", "val/apgd_acc", *headline)
        self.node_id = ""
        self.note: str | None = None

    def start(self, runtime: Runtime, budget: int) -> None:
        import ray
        from ray import tune

        self.node_id = ray.get_runtime_context().get_node_id()
        resources = tune.get_context().get_trial_resources().required_resources
        self.gpu_cap = cap_gpu_memory(runtime, float(resources.get("GPU", 0.0)))

    def load_checkpoint(self) -> dict | None:
        """The trial's latest checkpoint; if it is damaged, the newest older one that loads,
        else none (the trial starts over); if storage no longer has it, the stand-in its restore
        took (``compat.tune.function_trainable``); if the trial's folder holds a newer one than
        Tune's saved state knew, that one. Either way the trial's log and its next report
        (``restore_note``, which lands in its row) say so."""
        from ray import tune

        checkpoint = tune.get_checkpoint()
        notes = list(_RESTORE_NOTES)
        _RESTORE_NOTES.clear()
        saved = tune_compat.trial_checkpoints()
        tune_compat.number_checkpoints_after(saved)
        newest = checkpoint_newer_than(checkpoint, saved)
        if newest is not None:
            told = checkpoint.path.rsplit("/", 1)[-1] if checkpoint is not None else "no checkpoint"
            found = newest.path.rsplit("/", 1)[-1]
            notes.append(
                f"Tune's saved state had {told} for this trial, its folder has {found} "
                f"(written after the state was saved): resumed from {found}"
            )
            checkpoint = newest
        restored = "; ".join(notes)
        state, self.note = None, restored or None
        if checkpoint is not None:
            state, note = load_first_readable(
                [(c.path.rsplit("/", 1)[-1], _loader(c)) for c in checkpoint_candidates(checkpoint)]
            )
            self.note = "; ".join(n for n in (restored, note) if n) or None
            # The search may never have had the result of the checkpoint taken over Tune's.
            self.replay = bool(notes) and note is None
        if self.note:
            print(f"trial {tune.get_context().get_trial_id()}: {self.note}", flush=True)
        return state

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        from ray import tune

        first = {k: metrics[k] for k in self.order if k in metrics}
        metrics = {**first, **metrics, "node_id": self.node_id}
        if self.note:
            metrics[RESTORE_NOTE], self.note = self.note, None
        if checkpoint is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="orchestrator-ckpt-") as directory:
            save_checkpoint(checkpoint, directory)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def checkpoint_newer_than(checkpoint, saved: list):
    """The newest of ``saved`` (the trial folder's checkpoints, oldest first) when it is newer
    than ``checkpoint``, the one Tune gave the trial (``None``: none), else ``None``. Tune's
    saved experiment state lags its trials: a driver killed after a trial's checkpoint was
    written, before the state was synced, restores the trial from an older checkpoint or none."""
    if not saved:
        return None
    newest = saved[-1]
    if checkpoint is None:
        return newest
    return newest if newest.path.rsplit("/", 1)[-1] > checkpoint.path.rstrip("/").rsplit("/", 1)[-1] else None


def checkpoint_candidates(checkpoint) -> list:
    """``checkpoint``, then the older checkpoints Tune kept for the same trial
    (``checkpoint_NNNNNN`` beside it), newest first."""
    from ray import tune

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent, name = path.rsplit("/", 1)
    older = [p for p in checkpoint_folders(fs, parent) if p.rsplit("/", 1)[-1] < name]
    return [checkpoint, *(tune.Checkpoint(p, filesystem=fs) for p in reversed(older))]


def _loader(checkpoint) -> Callable[[], dict]:
    def load() -> dict:
        with checkpoint.as_directory() as directory:
            return load_checkpoint_file(directory)

    return load


def tune_trainable(info: TrainableInfo) -> Callable[[dict], dict]:
    """The Ray Tune function trainable of the trainable ``info`` describes."""
    module, headline = info.module, tuple(k for k in info.headline if not k.startswith("val/"))

    def trial(config: dict) -> None:
        from trainables.trial import run_trial

        tune_compat.bookkeeping_to_trial_log()
        spec = importlib.import_module(module).SPEC
        if config.get("deadline_file"):  # a trial of an experiment that was moved since
            config = {**config, "deadline_file": here(config["deadline_file"])}
        # Nothing returned: Ray Tune reports a function trainable's return value as one more
        # result, so every trial's last report would reach the scheduler, the searcher, the
        # progress lines and W&B twice.
        run_trial(spec, config, TuneReporter(headline))

    trial.__name__ = trial.__qualname__ = info.name
    # What Tune prints of a finished trial (it would print every one of ~40 metrics).
    tune_compat.set_progress_metrics(
        trial, ["iteration", "val/acc", "val/apgd_acc", *info.headline, "diverged"]
    )
    return tune_compat.function_trainable(trial, remember_restore_note)


#: What the trial process's restore had to say about its checkpoint (a Ray actor runs one
#: trial; ``TuneReporter.load_checkpoint`` takes the notes into the trial's next report).
_RESTORE_NOTES: list[str] = []


def remember_restore_note(note: str) -> None:
    """Keep ``note`` for the trial's next report (a module function: Ray pickles it by name,
    so the worker appends to its own module's list)."""
    _RESTORE_NOTES.append(note)
