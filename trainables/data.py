"""Datasets as tensors on the trial's device.

Images are prepared once per dataset (padded or resized to 32x32, uint8) and cached next to the
torchvision files; a trial loads the cache, scales it to [-1, 1] on its device and draws
shuffled mini-batches there. No DataLoader worker processes compete with Ray for CPUs.

Pixel scale: model inputs live in [-1, 1]. Every epsilon or noise level in this project is
given on the [0, 1] pixel scale and converted with :func:`to_model_scale`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.datasets import DATASETS, DatasetSpec

#: Model input range. An image pixel p in [0, 1] becomes 2p - 1.
PIXEL_RANGE: tuple[float, float] = (-1.0, 1.0)
#: Seed of the fixed train/validation split (independent of the trial seed, so that every
#: trial of a search is validated on the same images).
SPLIT_SEED = 0
DATA_ENV = "ORCHESTRATOR_DATA_DIR"
CACHE_ENV = "ORCHESTRATOR_CACHE_DIR"


def to_model_scale(value: float) -> float:
    """Convert an amount on the [0, 1] pixel scale (an eps, a sigma) to model-input units."""
    lo, hi = PIXEL_RANGE
    return value * (hi - lo)


class DatasetUnavailable(RuntimeError):
    """The dataset is neither on disk nor downloadable."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "orchestrator")


def resolve_data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, else ``$ORCHESTRATOR_DATA_DIR``, else ``~/.cache/orchestrator/data``."""
    root = data_dir or os.environ.get(DATA_ENV) or cache_dir() / "data"
    return Path(root).expanduser().resolve()


def _writable(path: Path) -> bool:
    """Whether we may write under ``path``. Read-only mode bits are respected even for root
    (who could write anyway): a shared dataset folder marked read-only stays untouched."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK) and bool(probe.stat().st_mode & 0o222)


def _working_root(root: Path, spec: DatasetSpec) -> Path:
    """A root torchvision may write into (it extracts archives beside them).

    A read-only root (a shared dataset mount) is mirrored into the cache with symbolic links
    to its files, so the original is read but never written.
    """
    if _writable(root):
        return root
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    mirror = cache_dir() / "data-mirror" / digest
    source = root / spec.folder
    if source.is_dir():
        for path in source.rglob("*"):
            target = mirror / spec.folder / path.relative_to(source)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path)
    return mirror


def _synthetic(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    prototypes = torch.rand(10, 1, 8, 8, generator=g)
    prototypes = F.interpolate(prototypes, size=32, mode="bilinear", align_corners=False)
    n = 3000 if split == "train" else 500
    g.manual_seed(1 if split == "train" else 2)
    labels = torch.randint(0, 10, (n,), generator=g)
    noise = 0.25 * torch.randn(n, 1, 32, 32, generator=g)
    images = (prototypes[labels] + noise).clamp(0, 1)
    return (images * 255).round().to(torch.uint8), labels


def _torchvision_arrays(spec: DatasetSpec, root: Path, train: bool):
    import torchvision

    if spec.name in ("mnist", "fashion_mnist"):
        cls = torchvision.datasets.MNIST if spec.name == "mnist" else torchvision.datasets.FashionMNIST
        ds = cls(str(root), train=train, download=True)
        images = ds.data.unsqueeze(1)  # N,1,28,28 uint8
        images = F.pad(images, (2, 2, 2, 2), value=0)  # 28 -> 32, background stays 0
        return images.contiguous(), ds.targets.long()
    if spec.name == "gtsrb":
        ds = torchvision.datasets.GTSRB(str(root), split="train" if train else "test", download=True)
        from PIL import Image

        images, labels = [], []
        for img, label in ds:  # PIL images, decoded once; the cache makes later loads instant
            img = img.convert("RGB").resize((32, 32), Image.BILINEAR)
            images.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8))
            labels.append(label)
        x = torch.stack(images).view(-1, 32, 32, 3).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(labels, dtype=torch.long)
    raise ValueError(f"unknown dataset {spec.name!r}")


def prepare_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Make sure ``name`` is available as cached uint8 tensors; return the cache file's folder.

    Raises :class:`DatasetUnavailable` with one line naming the dataset, the root and the fix.
    """
    spec = DATASETS[name]
    if spec.name == "synthetic":
        return cache_dir()
    root = resolve_data_root(data_dir)
    work = _working_root(root, spec)
    out = work / "orchestrator-cache"
    files = [out / f"{name}-{split}.pt" for split in ("train", "test")]
    if all(f.exists() for f in files):
        return out
    from filelock import FileLock

    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / f"{name}.lock")):
        if all(f.exists() for f in files):
            return out
        for train, path in zip((True, False), files):
            try:
                x, y = _torchvision_arrays(spec, work, train)
            except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError
                present = sorted(p.name for p in (work / spec.folder).rglob("*") if p.is_file())
                if present:
                    raise DatasetUnavailable(
                        f"{spec.folder} files under {root} could not be read "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                        f"they may be damaged or incomplete: replace them with torchvision's "
                        f"{spec.folder} files, or pass --data-dir / set {DATA_ENV} to a folder that has them"
                    ) from None
                raise DatasetUnavailable(
                    f"{spec.folder} is not under {root} and could not be downloaded "
                    f"({type(exc).__name__}): put torchvision's {spec.folder} files there, or "
                    f"pass --data-dir / set {DATA_ENV} to a folder that has them"
                ) from None
            tmp = path.with_suffix(".tmp")
            torch.save({"images": x, "labels": y}, tmp)
            os.replace(tmp, path)
    return out


def load_arrays(name: str, split: str, data_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, 32, 32) and int64 labels of the ``train`` or ``test`` file."""
    if name == "synthetic":
        return _synthetic(split)
    folder = prepare_dataset(name, data_dir)
    blob = torch.load(folder / f"{name}-{split}.pt", weights_only=True)
    return blob["images"], blob["labels"]


@dataclass
class Split:
    """Images in [-1, 1] and labels, on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.y.shape[0]

    def subset(self, n: int, seed: int = 0) -> Split:
        """A fixed random subset of ``n`` examples (all of them when ``n`` is 0 or too big)."""
        if n <= 0 or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].to(self.y.device)
        return Split(self.x[idx], self.y[idx])


@dataclass
class Data:
    spec: DatasetSpec
    train: Split
    val: Split
    test: Split


def _to_split(images: torch.Tensor, labels: torch.Tensor, device, channels_last: bool) -> Split:
    x = images.to(device=device, non_blocking=True).float().div_(127.5).sub_(1.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return Split(x, labels.to(device=device, non_blocking=True))


def load_data(
    name: str,
    device: torch.device,
    *,
    data_dir=None,
    val_size: int | None = None,
    train_subset: int = 0,
    channels_last: bool = False,
) -> Data:
    """Train / validation / test splits on ``device``.

    The validation split is a fixed, seeded draw from the training file (MNIST: 55,000 /
    5,000, as in seed 000); ``train_subset`` keeps the first n of the remaining training
    images (for small budgets and tests).
    """
    spec = DATASETS[name]
    x_train, y_train = load_arrays(name, "train", data_dir)
    x_test, y_test = load_arrays(name, "test", data_dir)
    val_size = spec.default_val_size if val_size is None else val_size
    if not 0 < val_size < len(y_train):
        raise ValueError(f"val_size={val_size} must be in (0, {len(y_train)})")
    perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if train_subset > 0:
        train_idx = train_idx[:train_subset]
    return Data(
        spec=spec,
        train=_to_split(x_train[train_idx], y_train[train_idx], device, channels_last),
        val=_to_split(x_train[val_idx], y_train[val_idx], device, channels_last),
        test=_to_split(x_test, y_test, device, channels_last),
    )


class BatchStream:
    """Shuffled mini-batches of a split, drawn on the split's device.

    Full batches only (static shapes for cuDNN and autocast); the shuffle order and position
    are part of the state so that a resumed trial continues mid-epoch exactly.
    """

    def __init__(self, split: Split, batch_size: int, seed: int):
        if batch_size > len(split):
            raise ValueError(f"batch_size={batch_size} exceeds the {len(split)} training images")
        self.split = split
        self.batch_size = batch_size
        self.generator = torch.Generator(device=split.y.device).manual_seed(seed)
        self.perm: torch.Tensor | None = None
        self.pos = 0
        #: Called after every batch drawn (progress display; not part of the state).
        self.on_batch: Callable[[], None] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.split) // self.batch_size

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.perm is None or self.pos + self.batch_size > len(self.split):
            self.perm = torch.randperm(len(self.split), generator=self.generator, device=self.split.y.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        if self.on_batch is not None:
            self.on_batch()
        return self.split.x[idx], self.split.y[idx]

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the split: ``batches_per_epoch`` batches."""
        for _ in range(self.batches_per_epoch):
            yield self.next()

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "perm": None if self.perm is None else self.perm.cpu(),
            "pos": self.pos,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        perm = state["perm"]
        self.perm = None if perm is None else perm.to(self.split.y.device)
        self.pos = state["pos"]
