"""The datasets a trial can use, described without torch (``orchestrator params``, the plan and
the CLI read them; :mod:`trainables.data` loads them)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASETS", "DatasetSpec"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # torchvision's folder under the root
    channels: int
    num_classes: int
    default_val_size: int
    #: The default minimum clean validation accuracy of a feasible search trial
    #: (``orchestrator search --min-clean``): far above a collapsed classifier (one class: ~11%
    #: of MNIST), below what an adversarially trained one reaches after a short budget (the
    #: learned attacker: 81% after its first cycle of 50 steps, 93% after the second).
    min_clean: float = 0.0


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", "MNIST", 1, 10, 5000, min_clean=0.8),
    "fashion_mnist": DatasetSpec("fashion_mnist", "FashionMNIST", 1, 10, 5000, min_clean=0.6),
    "gtsrb": DatasetSpec("gtsrb", "gtsrb", 3, 43, 3000, min_clean=0.6),
    # Procedural class prototypes plus noise: a fast, download-free stand-in for tests and
    # dry runs (learnable in a few steps, not a benchmark); no default constraint.
    "synthetic": DatasetSpec("synthetic", "", 1, 10, 500),
}
