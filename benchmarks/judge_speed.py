"""How much faster the final judge's ART attacks run with the model in the channels_last layout
(what ``orchestrator.robustness`` does) than in PyTorch's default NCHW layout, in one run.

    python benchmarks/judge_speed.py MODEL.pt --data-dir ../shared/data [-n 200] [--queries 1000]

MODEL is a file written by ``orchestrator export`` (or a ClassicClassifier state dict). On the
fixed test subset ``orchestrator evaluate`` uses, each ART attack (APGD-CE and Square, as the
judge configures them; Square with ``--queries``) runs twice with the same NumPy seed: once on
the NCHW model, once on the channels_last one. It prints both times, their ratio, and how many
images the two runs judge differently (the layouts compute the same numbers up to float
rounding, so this should be 0 or a borderline image or two).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.apgd_agreement import load_model  # noqa: E402
from orchestrator import robustness  # noqa: E402
from orchestrator.evaluate import SUBSET_SEED  # noqa: E402
from trainables.data import PIXEL_RANGE, load_arrays  # noqa: E402
from trainables.runtime import set_cpu_threads  # noqa: E402


class _NCHW(nn.Module):
    """The judge's [0, 1] -> [-1, 1] wrapper without the layout change."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = PIXEL_RANGE
        return self.model(x * (hi - lo) + lo)


def classifier(model: nn.Module, layout: str):
    from art.estimators.classification import PyTorchClassifier

    if layout == "channels_last":
        return robustness.art_classifier(model, (1, 32, 32), 10, torch.device("cpu"))
    model = model.to(memory_format=torch.contiguous_format)
    return PyTorchClassifier(
        model=_NCHW(model).eval(), loss=nn.CrossEntropyLoss(), input_shape=(1, 32, 32),
        nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR", ""))
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--queries", type=int, default=1000, help="Square's queries per image")
    args = parser.parse_args()
    set_cpu_threads()
    images, labels = load_arrays("mnist", "test", args.data_dir or None)
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SUBSET_SEED))[: args.n]
    x01 = robustness.to_unit(images[idx].float().div(127.5).sub(1.0)).numpy().astype(np.float32)
    y = labels[idx].numpy()
    onehot = np.eye(10, dtype=np.float32)[y]
    print(f"{args.n} test images, eps 0.3 on the [0, 1] scale, torch threads {torch.get_num_threads()}")
    head = ("attack", "NCHW s", "channels_last s", "ratio", "acc NCHW", "acc CL", "differ")
    print(f"{head[0]:<22} {head[1]:>8} {head[2]:>16} {head[3]:>6} {head[4]:>9} {head[5]:>7} {head[6]:>6}")
    for attack in ("apgd-ce", "square"):
        seconds, correct = {}, {}
        for layout in ("nchw", "channels_last"):
            model = load_model(args.model).eval()
            art = classifier(model, layout)
            np.random.seed(0)
            torch.manual_seed(0)
            a = robustness._art_attack(attack, art, 0.3, 250, queries=args.queries)
            start = time.perf_counter()
            adv = a.generate(x01, y=onehot)
            seconds[layout] = time.perf_counter() - start
            correct[layout] = art.predict(adv, batch_size=250).argmax(1) == y
        label = attack if attack != "square" else f"square ({args.queries} queries)"
        differ = int((correct["nchw"] != correct["channels_last"]).sum())
        print(
            f"{label:<22} {seconds['nchw']:>8.1f} {seconds['channels_last']:>16.1f} "
            f"{seconds['nchw'] / seconds['channels_last']:>6.2f} {correct['nchw'].mean():>9.1%} "
            f"{correct['channels_last'].mean():>7.1%} {differ:>6}",
            flush=True,
        )


if __name__ == "__main__":
    main()
