"""The final judge (``orchestrator evaluate --attack autoattack``) with ART querying the model
through ``orchestrator.attack_model.Answers`` against ART's plain estimator of the same model,
on the same images, in one run: seconds, accuracy and the images whose verdicts differ.

    python benchmarks/judge_speed.py MODEL.pt --data-dir ../shared/data [-n 1000]
    python benchmarks/judge_speed.py MODEL.pt -n 1000 --only plain --save plain.npz   # once
    python benchmarks/judge_speed.py MODEL.pt -n 1000 --only answers --against plain.npz

MODEL is a file written by ``orchestrator export``. The images are the fixed test subset
``orchestrator evaluate`` attacks (eps 0.3 on the [0, 1] scale; APGD-CE, APGD-T over 9
targets, Square with 5,000 queries, each on the images the previous ones left). ``--save``
keeps a run's verdicts and seconds; ``--against`` compares this run with a saved one (the plain
judge on 1,000 images takes most of an hour on 2 cores, so it need not be rerun per change).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import robustness  # noqa: E402
from orchestrator.evaluate import SUBSET_SEED  # noqa: E402
from orchestrator.export import load_classifier  # noqa: E402
from trainables.data import load_arrays  # noqa: E402
from trainables.runtime import set_cpu_threads  # noqa: E402

PARTS = ("clean", *robustness.AUTOATTACK)


def judge(model, x, y, remember: bool, queries: int) -> dict:
    import art.attacks.evasion  # noqa: F401 - imported before the clock starts

    r = robustness.run_attack(
        "autoattack", model, x, y, square_queries=queries, remember=remember,
        progress=lambda line: print("   ", line, file=sys.stderr, flush=True),
    )  # fmt: skip
    return {"correct": r.correct, "broken_by": r.broken_by, "seconds": r.seconds}


def row(name: str, run: dict) -> str:
    broken = ", ".join(f"{p} {int((run['broken_by'] == k).sum())}" for k, p in enumerate(PARTS[1:], 1))
    return f"{name:<8} {run['seconds']:>9.1f} {run['correct'].mean():>9.1%}   broken by: {broken}"


def verdict(run: dict, i: int) -> str:
    k = int(run["broken_by"][i])
    return "wrong unattacked" if k < 0 else "held" if k == 0 else f"broken by {PARTS[k]}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR", ""))
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--queries", type=int, default=5000, help="Square's queries per image")
    parser.add_argument("--only", choices=("plain", "answers"), help="run one of the two")
    parser.add_argument("--save", help="write this run's verdicts here (.npz)")
    parser.add_argument("--against", help="verdicts saved by an earlier run (--save) to compare with")
    args = parser.parse_args()
    set_cpu_threads()
    model, _ = load_classifier(args.model)
    images, labels = load_arrays("mnist", "test", args.data_dir or None)
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SUBSET_SEED))[: args.n]
    x, y = images[idx].float().div(127.5).sub(1.0), labels[idx]
    print(
        f"{args.model}: {args.n} test images, eps 0.3 on the [0, 1] scale, Square {args.queries} "
        f"queries, torch threads {torch.get_num_threads()}"
    )
    runs = {}
    if args.against:
        saved = np.load(args.against)
        if int(saved["queries"]) != args.queries or len(saved["correct"]) != args.n:
            sys.exit(f"{args.against} was saved with other images or queries")
        runs[f"{saved['name']}*"] = {k: saved[k] for k in ("correct", "broken_by", "seconds")}
    for name in ("plain", "answers"):
        if args.only in (None, name):
            runs[name] = judge(model, x, y, name == "answers", args.queries)
    print(f"{'judge':<8} {'seconds':>9} {'accuracy':>9}")
    for name, run in runs.items():
        print(row(name, run))
    if args.save and args.only:
        np.savez(args.save, name=args.only, queries=args.queries, **runs[args.only])
    if len(runs) == 2:
        (a, ra), (b, rb) = runs.items()
        differ = np.flatnonzero(ra["correct"] != rb["correct"])
        shown = "; ".join(f"#{i} {verdict(ra, i)} / {verdict(rb, i)}" for i in differ[:10])
        print(
            f"{a} / {b}: {ra['seconds'] / rb['seconds']:.2f} times the seconds; verdicts agree on "
            f"{1 - len(differ) / args.n:.1%} of images ({len(differ)} differ{': ' + shown if shown else ''})"
        )
    if args.against:
        print("* saved by an earlier run (--against)")


if __name__ == "__main__":
    main()
