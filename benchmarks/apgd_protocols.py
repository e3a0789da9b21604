"""The test split's APGD protocols side by side on exported classifiers: the 500 test images a
trial attacks (``test_robust_n=500``), accuracy and seconds per protocol.

    orchestrator export prior-600s-seed0 --storage benchmarks/out/search_value/runs --out prior.pt
    python benchmarks/apgd_protocols.py prior.pt [more.pt ...]

Protocols: APGD-CE + APGD-DLR, 10 steps each (a trial's test metric before 2026-11-30);
APGD-CE + APGD-T against the 9 most likely wrong classes, 25 steps each (since); APGD-CE +
APGD-T against 3 classes, 10 steps (a cheaper validation candidate). Compare with the model's
``orchestrator evaluate`` numbers (ART's APGD-CE, APGD-T, Square). eps 0.3, [0, 1] pixel scale.
"""

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

set_cpu_threads()
data = load_data("mnist", torch.device("cpu"), data_dir=os.environ.get("ORCHESTRATOR_DATA_DIR") or None)
base = dict(fgsm_eps=(), pgd_steps=0, noise=False, clean_n=1, robust_n=500, seed=0)
for path in sys.argv[1:]:
    model, _ = load_classifier(path)
    model.eval()
    for label, steps, targets in [("CE+DLR-10 (old)", 10, 0), ("CE+T9-25 (new)", 25, 9), ("CE+T3-10", 10, 3)]:
        t = time.perf_counter()
        out = evaluate(model, data.test, EvalSpec(**base, apgd_steps=steps, apgd_targets=targets), "test")
        print(f"{path}: {label}: {out['test/apgd_acc']:.1%} in {time.perf_counter() - t:.0f}s", flush=True)
