"""The reference Classic Classifier: a fixed judge for generated samples.

``wgan_gp`` needs a classifier that did not see generated images: seed 000 compares its Robust
Classifier with a Classic Classifier on generator samples, and the sample-quality score (a
Frechet distance) needs a fixed feature space so that trials can be compared. The reference is
trained once per dataset and recipe with the ``classic`` trainable's own epoch loop and cached;
a search trains it on the driver and hands every trial the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from trainables.data import Data, cache_dir
from trainables.models import ClassicClassifier
from trainables.runtime import Runtime
from trainables.safe_load import NotAWeightsFile, load_weights, read_bytes

RECIPE_VERSION = 1


def reference_key(dataset: str, epochs: int, train_subset: int, val_size: int) -> str:
    recipe = {
        "v": RECIPE_VERSION,
        "dataset": dataset,
        "epochs": epochs,
        "subset": train_subset,
        "val": val_size,
    }
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def train_reference(data: Data, rt: Runtime, epochs: int) -> dict:
    """Train a Classic Classifier (Adam 1e-3, batch 128, seed 0) for ``epochs`` epochs."""
    from trainables.classic import ClassicConfig, ClassicProgram

    devices = [rt.device] if rt.device.type == "cuda" else []
    # A forked RNG: training the reference must not shift the calling trial's random stream.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        cfg = ClassicConfig(dataset=data.spec.name, epochs=epochs, seed=0)
        program = ClassicProgram(cfg, rt, data)
        for epoch in range(1, epochs + 1):
            program.train_iteration(epoch)
    return {k: v.cpu() for k, v in program.classifier.state_dict().items()}


def ensure_reference(
    data: Data,
    rt: Runtime,
    *,
    epochs: int,
    train_subset: int,
    val_size: int,
    directory: Path | None = None,
) -> Path:
    """Path of the cached reference state dict, training it first if needed (under a lock)."""
    from filelock import FileLock

    directory = directory or cache_dir() / "reference"
    directory.mkdir(parents=True, exist_ok=True)
    key = reference_key(data.spec.name, epochs, train_subset, val_size)
    path = directory / f"{data.spec.name}-classic-{key}.pt"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            state = train_reference(data, rt, epochs)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
    return path


def read_reference(source: str | os.PathLike) -> dict:
    """The state dict of a reference file (a state dict, or an ``orchestrator export`` file),
    loaded as weights only: :class:`~trainables.safe_load.UnsafeFile` for a file that would
    run code, :class:`~trainables.safe_load.NotAWeightsFile` for one that holds no weights."""
    blob = load_weights(read_bytes(source), name=str(source))
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NotAWeightsFile(f"{source}: not a state dict of a Classic Classifier")
    return state


def load_reference(source: str | os.PathLike, data: Data, rt: Runtime) -> ClassicClassifier:
    """A frozen reference classifier from a state-dict file (local path or pyarrow URI), or
    from an ``orchestrator export`` file (which wraps the state dict)."""
    state = read_reference(source)
    model = ClassicClassifier(data.spec.channels, data.spec.num_classes)
    model.load_state_dict(state)
    model = rt.module(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
