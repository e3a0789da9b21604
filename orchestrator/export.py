"""Export the best classifier of an experiment (or of a ``train`` checkpoint), and load it back anywhere.

Two formats:

- ``state_dict`` (default): a ``torch.save`` file with the classifier's weights and everything
  needed to rebuild and feed it (architecture, channels, classes, dataset, input size, pixel
  range, the trial's config and metrics). :func:`load_classifier` rebuilds the model; it needs
  this project installed.
- ``exported``: a ``torch.export`` program (the successor of TorchScript, which PyTorch now
  deprecates) with a dynamic batch size and the same metadata as ``metadata.json``; load it
  with plain PyTorch: ``torch.export.load(path).module()``.

Inputs are 32x32 images scaled to [-1, 1] (MNIST: padded 28 -> 32); :func:`preprocess` does it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orchestrator.errors import UserError
from orchestrator.leaderboard import leaderboard
from orchestrator.results import load_results, table_metadata
from orchestrator.storage import Location
from trainables.data import DATASETS, PIXEL_RANGE
from trainables.models import ARCHITECTURES, CLASSIFIERS, make_classifier
from trainables.reporting import CHECKPOINT_FILE
from trainables.safe_load import (
    NotAWeightsFile,
    UnsafeFile,
    is_exported_program,
    load_weights,
    read_exported_weights,
)

FORMAT = "robust-orchestrator/classifier/v1"
FORMATS = ("state_dict", "exported")


def pick_trial(experiment: Location, trial_id: str | None = None) -> dict[str, Any]:
    """The requested trial, or the leaderboard's first (best objective among completed trials)."""
    return pick_trials(experiment, trial_id, 1)[0]


def pick_trials(experiment: Location, trial_id: str | None = None, top: int = 1) -> list[dict[str, Any]]:
    """The requested trial, or the leaderboard's first ``top`` completed trials with a
    checkpoint (feasible ones first)."""
    try:
        trials, _ = load_results(experiment)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    rows = trials.to_pylist()
    if trial_id:
        matches = [r for r in rows if r["trial_id"] == trial_id]
        if not matches:
            raise UserError(f"no trial {trial_id!r} in {experiment.uri}")
        if not matches[0].get("checkpoint_path"):
            raise UserError(f"trial {trial_id} has no checkpoint")
        return matches[:1]
    completed = [r for r in rows if r["outcome"] == "completed" and r.get("checkpoint_path")]
    if not completed:
        raise UserError(f"{experiment.uri} has no completed trial with a checkpoint")
    return leaderboard(completed, table_metadata(trials)["objectives"])[:top]


def checkpoint_location(experiment: Location, checkpoint_path: str) -> Location:
    """A trial's checkpoint folder in the experiment where it is now: the table keeps the path it
    was written to (``<experiment>/<trial folder>/checkpoint_NNNNNN``), which names the old place
    of a moved or copied experiment."""
    trial_dir, name = checkpoint_path.rstrip("/").rsplit("/", 2)[-2:]
    return experiment.child(trial_dir, name)


def read_checkpoint(experiment: Location, checkpoint_path: str) -> dict[str, Any]:
    """A trial's checkpoint, loaded as weights only; one-line :class:`UserError` when it is gone
    (naming the trial's checkpoints that are still there), damaged or would run code."""
    trial_dir, name = checkpoint_path.rstrip("/").rsplit("/", 2)[-2:]
    where = experiment.child(trial_dir, name, CHECKPOINT_FILE)
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        kept = [c.uri.rsplit("/", 1)[-1] for c in experiment.child(trial_dir).folders("checkpoint_")]
        left = f"its folder still has {', '.join(kept)}" if kept else "its folder has no checkpoint left"
        raise UserError(f"trial {trial_dir}: its checkpoint {name} is gone ({where.uri}); {left}") from None
    try:
        return load_weights(data, name=where.uri)
    except (UnsafeFile, NotAWeightsFile) as exc:
        raise UserError(str(exc)) from None


def export_classifier(
    experiment: Location, out: str | Path, *, trial_id: str | None = None, fmt: str = "state_dict"
) -> dict[str, Any]:
    """Write the chosen trial's classifier to ``out``; returns the metadata written."""
    _check_format(fmt)
    row = pick_trial(experiment, trial_id)
    state = read_checkpoint(experiment, row["checkpoint_path"])
    metrics = {k[len("last/") :]: v for k, v in row.items() if k.startswith("last/") and v is not None}
    source = {
        "experiment": experiment.uri,
        "trial_id": row["trial_id"],
        "metrics": metrics,
        "train_time_s": row.get("train_time_s"),
    }
    return _write(state, source, Path(out), fmt)


def export_checkpoint(directory: str | Path, out: str | Path, *, fmt: str = "state_dict") -> dict[str, Any]:
    """Write the classifier of an ``orchestrator train --checkpoint-dir`` directory to ``out``."""
    _check_format(fmt)
    directory = Path(directory)
    if not (directory / CHECKPOINT_FILE).exists():
        raise UserError(f"{directory} holds no {CHECKPOINT_FILE} (not a checkpoint directory)")
    try:
        state = load_weights(directory / CHECKPOINT_FILE)
    except (UnsafeFile, NotAWeightsFile) as exc:
        raise UserError(str(exc)) from None
    source = {"experiment": None, "trial_id": None, "checkpoint": str(directory), "metrics": {}}
    return _write(state, source, Path(out), fmt)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def _write(state: dict[str, Any], source: dict[str, Any], out: Path, fmt: str) -> dict[str, Any]:
    config = state["config"]
    spec = DATASETS[config["dataset"]]
    meta = {
        "format": FORMAT,
        **classifier_meta(config),
        "dataset": spec.name,
        "input_size": 32,
        "pixel_range": list(PIXEL_RANGE),
        "trainable": state["trainable"],
        **source,
        "iteration": state["iteration"],
        "config": config,
    }
    weights = state["program"]["classifier"]
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "state_dict":
        torch.save({**meta, "state_dict": weights}, out)
        return meta
    model = build_classifier(meta, weights)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    example = torch.zeros(2, spec.channels, 32, 32)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out, extra_files={"metadata.json": json.dumps(meta, default=str)})
    return meta


def classifier_meta(config: dict[str, Any]) -> dict[str, Any]:
    """What rebuilds a trial's classifier: architecture, width, channels and classes (a config
    written before ``classifier`` and ``width`` existed is the Classic Classifier of width 32)."""
    spec = DATASETS[config["dataset"]]
    return {
        "architecture": CLASSIFIERS[config.get("classifier", "classic")].__name__,
        "width": int(config.get("width", 32)),
        "channels": spec.channels,
        "num_classes": spec.num_classes,
    }


def build_classifier(meta: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
    if meta.get("architecture") not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {meta.get('architecture')!r}")
    model = make_classifier(
        meta["architecture"], meta["channels"], meta["num_classes"], meta.get("width", 32)
    )
    model.load_state_dict(weights)
    return model.eval()


def load_classifier(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported classifier (either format) in eval mode, with its metadata.

    Nothing in the file runs: a ``state_dict`` export is loaded as weights only, and an
    ``exported`` program is rebuilt from its raw weights and metadata, never unpickled.
    :class:`UnsafeFile` for a file that would run code, ``ValueError`` for any other file that is
    not one of this project's exports."""
    path = Path(path)
    foreign = f"{path} is not a classifier exported by robust-orchestrator"
    if is_exported_program(path):
        try:
            weights, extra = read_exported_weights(path)
            meta = json.loads(extra.get("metadata.json") or "{}")
        except UnsafeFile:
            raise
        except Exception as exc:  # zip, JSON or layout errors of every kind
            raise ValueError(f"{foreign} ({type(exc).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(foreign)
        return build_classifier(meta, weights), meta
    try:
        blob = load_weights(path)
    except NotAWeightsFile:
        raise ValueError(foreign) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(foreign)
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return build_classifier(meta, blob["state_dict"]), meta


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) in [0, 255] -> model input: 32x32, [-1, 1].

    28x28 images are padded by 2 pixels of background, as in training; others are resized.
    """
    x = images.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    x = x / 255.0
    if x.shape[-1] == 28 and x.shape[-2] == 28:
        x = nn.functional.pad(x, (2, 2, 2, 2), value=0.0)
    elif x.shape[-2:] != (32, 32):
        x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    lo, hi = PIXEL_RANGE
    return x * (hi - lo) + lo
