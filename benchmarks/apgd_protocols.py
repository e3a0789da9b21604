"""The test split's APGD protocols side by side on exported classifiers: the 500 test images a
trial attacks (``test_robust_n=500``), accuracy and seconds per protocol.

    orchestrator export prior-600s-seed0 --storage benchmarks/out/search_value/runs --out prior.pt
    python benchmarks/apgd_protocols.py prior.pt [more.pt ...]
    python benchmarks/apgd_protocols.py prior.pt [more.pt ...] --square 500 1000


Protocols: APGD-CE + APGD-DLR, 10 steps each (a trial's test metric before 2026-11-30);
APGD-CE + APGD-T against the 9 most likely wrong classes, 25 steps each (since); APGD-CE +
APGD-T against 3 classes, 10 steps (a cheaper validation candidate). With ``--square Q ...``:
instead, a trial's final test since 2026-12-06, APGD-CE + APGD-T x9 (25 steps) then the
project's Square with Q queries on the images APGD leaves (``test/apgd_square_acc``), once per
Q. Compare with the model's ``orchestrator evaluate`` numbers (ART's APGD-CE, APGD-T, Square with
5,000 queries). eps 0.3, [0, 1] pixel scale.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from orchestrator.export import load_classifier
from trainables.data import load_data
from trainables.evaluation import EvalSpec, evaluate
from trainables.runtime import set_cpu_threads

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("models", nargs="+", help="files written by orchestrator export")
parser.add_argument("--square", type=int, nargs="*", default=[], help="Square query budgets to compare")
args = parser.parse_args()
set_cpu_threads()
data = load_data("mnist", torch.device("cpu"), data_dir=os.environ.get("ORCHESTRATOR_DATA_DIR") or None)
base = dict(fgsm_eps=(), pgd_steps=0, noise=False, clean_n=1, robust_n=500, seed=0)
protocols = [("CE+DLR-10 (old)", 10, 0, 0), ("CE+T9-25", 25, 9, 0), ("CE+T3-10", 10, 3, 0)]
if args.square:
    protocols = [(f"CE+T9-25 + Square-{q}", 25, 9, q) for q in args.square]
for path in args.models:
    model, _ = load_classifier(path)
    model.eval()
    for label, steps, targets, queries in protocols:
        t = time.perf_counter()
        spec = EvalSpec(**base, apgd_steps=steps, apgd_targets=targets, square_queries=queries)
        out = evaluate(model, data.test, spec, "test")
        square = f", with Square {out['test/apgd_square_acc']:.1%}" if queries else ""
        took = time.perf_counter() - t
        print(f"{path}: {label}: APGD {out['test/apgd_acc']:.1%}{square} in {took:.0f}s", flush=True)
