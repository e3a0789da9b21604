"""Is the search's validation metric a signal worth optimising? Rank agreement with AutoAttack.

    python benchmarks/val_signal.py --data-dir ../shared/data                 # ~1 h on 2 cores
    python benchmarks/val_signal.py --data-dir ../shared/data \\
        --extra benchmarks/out/learned_attacker/{a,b,c}.pt                    # add saved models

Trains (once; models are kept in ``--out``) Classic Classifiers of different quality on MNIST
with the ``classic`` trainable's own program: clean training, FGSM training (eps 0.1 and 0.3;
at 0.3 it overfits to FGSM: high FGSM, no PGD accuracy), and PGD-10 training at eps 0.1, 0.2
and 0.3 for different numbers of images (briefly trained ones mask gradients: PGD-40 high,
AutoAttack low). ``--extra`` adds classifiers saved by ``benchmarks/learned_attacker.py`` or
``orchestrator export``.

Every model is then measured on the same images: the fixed validation subset a trial attacks
(``robust_n`` = 200 images of the validation split, the subset ``trainables.evaluation``
draws), with

- the search's validation metric, ``val/apgd_acc``: the project's APGD-CE then APGD-DLR,
  ``apgd_steps`` (10) each, exactly as a trial computes it;
- the previous validation metric, ``val/pgd_acc``: PGD-40, step 0.01, one random start;
- AutoAttack from the Adversarial Robustness Toolbox (APGD-CE, APGD-T, Square; see
  ``orchestrator.robustness``), the reference.

It prints one row per model (accuracies and seconds) and, for each validation metric, the
Spearman rank correlation with AutoAttack across the models, its largest overestimate of
AutoAttack, and its cost per 1,000 images. Every eps is 0.3 on the [0, 1] pixel scale.
Results per model are kept in ``<name>.json`` while newer than the model, so an interrupted
run loses no finished attack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.robustness import run_attack  # noqa: E402
from trainables.classic import ClassicConfig, ClassicProgram  # noqa: E402
from trainables.data import Split  # noqa: E402
from trainables.evaluation import EvalSpec, evaluate  # noqa: E402
from trainables.models import ClassicClassifier  # noqa: E402
from trainables.runtime import Runtime, keep_freed_memory, seed_everything, set_cpu_threads  # noqa: E402
from trainables.trial import TrialConfig, load_trial_data  # noqa: E402

#: name -> (classic config, training images seen): a spread of robustness, masked ones included.
MODELS = {
    "clean": ({"adv_train": "none"}, 10_000),
    "fgsm-0.1": ({"adv_train": "fgsm", "adv_eps": 0.1, "adv_weight": 0.5}, 20_000),
    "fgsm-0.3": ({"adv_train": "fgsm", "adv_eps": 0.3, "adv_weight": 1.0}, 20_000),
    "pgd-0.1": ({"adv_train": "pgd", "adv_eps": 0.1, "adv_weight": 1.0}, 5_000),
    "pgd-0.2": ({"adv_train": "pgd", "adv_eps": 0.2, "adv_weight": 1.0}, 10_000),
    "pgd-0.3-brief": ({"adv_train": "pgd", "adv_eps": 0.3, "adv_weight": 1.0}, 5_000),
    "pgd-0.3": ({"adv_train": "pgd", "adv_eps": 0.3, "adv_weight": 1.0}, 15_000),
    "pgd-0.3-mix": ({"adv_train": "pgd", "adv_eps": 0.3, "adv_weight": 0.5}, 10_000),
}


def train(name: str, data_dir: str, out: Path) -> Path:
    path = out / f"{name}.pt"
    if path.exists():
        return path
    params, images = MODELS[name]
    cfg = ClassicConfig.from_dict({"dataset": "mnist", "data_dir": data_dir, "seed": 0, **params})
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    seed_everything(cfg.seed)
    program = ClassicProgram(cfg, rt, load_trial_data(cfg, rt))
    start = time.perf_counter()
    while program.images_seen < images:
        x, y = program.stream.next()
        program.step(x, y)
    torch.save(program.classifier.state_dict(), path)
    print(
        f"{name}: trained on {program.images_seen:,} images in {time.perf_counter() - start:.0f}s", flush=True
    )
    return path


def load(path: Path, rt: Runtime) -> torch.nn.Module:
    blob = torch.load(path, map_location=rt.device, weights_only=False)
    if isinstance(blob, dict) and "state_dict" in blob:  # an `orchestrator export` file
        from orchestrator.export import load_classifier

        return load_classifier(str(path))[0].to(rt.device).eval()
    model = rt.module(ClassicClassifier(1, 10))
    model.load_state_dict(blob)
    return model.eval()


def measure(path: Path, split: Split, n: int, rt: Runtime, out: Path) -> dict:
    saved = out / f"{path.stem}.json"
    if saved.exists() and saved.stat().st_mtime >= path.stat().st_mtime:
        row = json.loads(saved.read_text())
        if row.get("n") == n:
            return row
    model = load(path, rt)
    base = TrialConfig()  # the validation protocol of a trial with default settings
    only = {"fgsm_eps": (), "noise": False, "robust_n": n, "clean_n": 0}
    row: dict = {"model": path.stem, "n": n}
    for key, spec in (
        ("apgd", EvalSpec(**{**vars(base.eval_spec()), **only, "pgd_steps": 0})),
        ("pgd40", EvalSpec(**{**vars(base.eval_spec()), **only, "apgd_steps": 0, "pgd_steps": 40})),
    ):
        start = time.perf_counter()
        values = evaluate(model, split, spec, "val")
        row[f"{key}_s"] = time.perf_counter() - start
        row[key] = values["val/apgd_acc" if key == "apgd" else "val/pgd_acc"]
        row["clean"] = values["val/acc"]
    # AutoAttack on exactly the images evaluate() attacked.
    subset = split.subset(n, seed=EvalSpec().seed + 1)
    aa = run_attack(
        "autoattack", model, subset.x, subset.y, progress=lambda line: print(f"  {path.stem} {line}")
    )
    row["aa"], row["aa_s"] = aa.accuracy, aa.seconds
    saved.write_text(json.dumps(row, indent=1))
    return row


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR", ""))
    parser.add_argument("--extra", nargs="*", default=[], help="more classifier files to measure")
    parser.add_argument("--models", default=",".join(MODELS), help="which of the built-in models")
    parser.add_argument("-n", type=int, default=TrialConfig().robust_n, help="validation images (robust_n)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "val_signal"))
    args = parser.parse_args()
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    if len(names) + len(args.extra) < 8:
        parser.error("the comparison needs at least 8 models")
    set_cpu_threads()
    keep_freed_memory()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [train(name, args.data_dir, out) for name in names] + [Path(p) for p in args.extra]
    cfg = ClassicConfig.from_dict({"dataset": "mnist", "data_dir": args.data_dir})
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    val = load_trial_data(cfg, rt).val
    rows = []
    for path in paths:
        row = measure(path, val, args.n, rt, out)
        rows.append(row)
        print(
            f"{row['model']}: clean {row['clean']:.1%}  APGD-10 {row['apgd']:.1%}  PGD-40 {row['pgd40']:.1%}"
            f"  AutoAttack {row['aa']:.1%}",
            flush=True,
        )
    print(f"\n{len(rows)} classifiers, {args.n} validation images each, eps 0.3 ([0, 1] scale)")
    head = f"{'model':<16} {'clean':>6} {'APGD-10':>8} {'PGD-40':>7} {'AA':>6}"
    print(f"{head}   {'APGD s':>7} {'PGD s':>6} {'AA s':>6}")
    for r in rows:
        print(
            f"{r['model']:<16} {r['clean']:>6.1%} {r['apgd']:>8.1%} {r['pgd40']:>7.1%} {r['aa']:>6.1%}"
            f"   {r['apgd_s']:>7.1f} {r['pgd40_s']:>6.1f} {r['aa_s']:>6.0f}"
        )
    aa = [r["aa"] for r in rows]
    print(
        f"\n{'validation metric':<34} {'Spearman vs AA':>14} {'max over AA':>12} {'s per 1,000 images':>19}"
    )
    for key, label in (("apgd", "APGD-CE+DLR-10 (val/apgd_acc)"), ("pgd40", "PGD-40 (the old val/pgd_acc)")):
        values = [r[key] for r in rows]
        over = max(v - a for v, a in zip(values, aa))
        cost = float(np.mean([r[f"{key}_s"] for r in rows])) * 1000 / args.n
        print(f"{label:<34} {spearman(values, aa):>14.3f} {over:>12.1%} {cost:>19.1f}")
    cost = float(np.mean([r["aa_s"] for r in rows])) * 1000 / args.n
    print(f"{'AutoAttack (ART), the reference':<34} {'':>14} {'':>12} {cost:>19.1f}")


if __name__ == "__main__":
    main()
