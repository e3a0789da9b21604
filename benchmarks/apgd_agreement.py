"""Does the project's own APGD (trainables/attacks.py, used inside validation) agree with the
Adversarial Robustness Toolbox's (used for final numbers)? Same models, same images.

    python benchmarks/apgd_agreement.py MODEL.pt [MODEL.pt ...] --data-dir ../shared/data

MODEL is a file written by ``orchestrator export`` or a ``{method}.pt`` state dict of
``benchmarks/learned_attacker.py`` (a ClassicClassifier on MNIST). For each model, on the fixed
test subset ``orchestrator evaluate`` uses (seed 1), it prints accuracy under ART's APGD-CE and
under ours (100 steps, one random start) with their times, ours with the DLR loss, and the
difference in points (the goal: within about 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.evaluate import SUBSET_SEED  # noqa: E402
from orchestrator.robustness import run_attack  # noqa: E402
from trainables.apgd import apgd  # noqa: E402
from trainables.data import load_arrays  # noqa: E402
from trainables.models import ClassicClassifier  # noqa: E402
from trainables.runtime import set_cpu_threads  # noqa: E402


def load_model(path: str) -> torch.nn.Module:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(blob, dict) and "state_dict" in blob:
        from orchestrator.export import load_classifier

        return load_classifier(path)[0]
    model = ClassicClassifier(1, 10)
    model.load_state_dict(blob)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR", ""))
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    set_cpu_threads()
    images, labels = load_arrays("mnist", "test", args.data_dir or None)
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SUBSET_SEED))[: args.n]
    x, y = images[idx].float().div(127.5).sub(1.0), labels[idx]
    print(f"{'model':<28} {'ART APGD-CE':>12} {'ours CE':>9} {'diff':>6} {'ours DLR':>9}  times (s)")
    for path in args.models:
        model = load_model(path)
        art = run_attack("apgd-ce", model, x, y)
        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        ours = torch.cat(
            [
                apgd(model, x[i : i + 250], y[i : i + 250], 0.3, steps=args.steps, generator=gen)[1]
                for i in range(0, len(y), 250)
            ]
        )
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        dlr = torch.cat(
            [
                apgd(model, x[i : i + 250], y[i : i + 250], 0.3, steps=args.steps, loss="dlr", generator=gen)[
                    1
                ]
                for i in range(0, len(y), 250)
            ]
        )
        dlr_s = time.perf_counter() - start
        a, o, d = art.accuracy, ours.float().mean().item(), dlr.float().mean().item()
        print(
            f"{Path(path).name:<28} {a:>12.1%} {o:>9.1%} {100 * (o - a):>+6.1f} {d:>9.1%}"
            f"  ART {art.seconds:.0f}, ours CE {ours_s:.0f}, DLR {dlr_s:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
