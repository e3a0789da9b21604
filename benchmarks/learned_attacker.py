"""Does the perturbation GAN learn to attack? Three classifiers at equal wall time, one table.

    python benchmarks/learned_attacker.py --data-dir ../shared/data            # ~2 h 30 min on 2 cores
    python benchmarks/learned_attacker.py --data-dir ../shared/data --evaluate-only

Trains, for the same wall-clock budget each (``--minutes``, default 15) on all of MNIST's
training split (55,000 images), one after the other in this process:

  (a) ``adaptive_ratio`` with seed 001's image generator (``generator=image``, fixed ratio 2);
  (b) ``adaptive_ratio`` with the learned attacker (``generator=gradient``: 5 recursive steps
      of at most 0.5 eps, one latent code, clean share 0.2, fixed ratio 1);
  (c) the ``classic`` trainable with PGD adversarial training (PGD-10, step 2.5 eps / 10,
      adversarial examples only: Madry et al.'s recipe).

Each uses the trainables' own programs and step functions (exactly what a search trial runs),
stopping at the first step boundary after the budget. Then every classifier is evaluated on
MNIST's test split: clean accuracy on all 10,000 images, the project's PGD-40 (eps 0.3, step
0.01, one random start: the MNIST challenge protocol) on a fixed subset of ``--pgd-n`` images,
and, on the first ``--strong-n`` of those, attacks that gradient masking does not fool, from the
Adversarial Robustness Toolbox: APGD-CE, APGD-T (targeted DLR, 3 target classes) and the
gradient-free Square attack (5,000 queries), plus their per-image worst case. Every eps is on
the [0, 1] pixel scale. Models and numbers are written to ``--out``; the table is printed. A
model's evaluation is kept in ``<method>.eval.json`` and re-used while it is newer than the
model, so an interrupted run loses no finished attack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.robustness import run_attack  # noqa: E402
from trainables.adaptive_ratio import AdaptiveRatioConfig, AdaptiveRatioProgram  # noqa: E402
from trainables.classic import ClassicConfig, ClassicProgram  # noqa: E402
from trainables.data import Split  # noqa: E402
from trainables.evaluation import accuracy  # noqa: E402
from trainables.runtime import Runtime, keep_freed_memory, seed_everything, set_cpu_threads  # noqa: E402
from trainables.trial import load_trial_data  # noqa: E402

#: name -> (label, config class, program class, config)
METHODS = {
    "a": (
        "(a) perturbation GAN, image generator (seed 001)",
        AdaptiveRatioConfig,
        AdaptiveRatioProgram,
        {"generator": "image", "schedule": "fixed", "k": 2, "cycle_steps": 10, "clean_frac": 0.5},
    ),
    "b": (
        "(b) perturbation GAN, learned attacker (gradient)",
        AdaptiveRatioConfig,
        AdaptiveRatioProgram,
        {"generator": "gradient", "schedule": "fixed", "k": 1, "cycle_steps": 10, "clean_frac": 0.2},
    ),
    "c": (
        "(c) Classic Classifier, PGD-10 adversarial training",
        ClassicConfig,
        ClassicProgram,
        {"adv_train": "pgd", "adv_eps": 0.3, "adv_steps": 10, "adv_weight": 1.0},
    ),
}
STRONG = ("apgd-ce", "apgd-t", "square")


def train(method: str, data_dir: str, minutes: float, out: Path) -> dict:
    label, config_cls, program_cls, params = METHODS[method]
    cfg = config_cls.from_dict({"dataset": "mnist", "data_dir": data_dir, "seed": 0, **params})
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    seed_everything(cfg.seed)
    data = load_trial_data(cfg, rt)
    program = program_cls(cfg, rt, data)
    print(f"{label}: training for {minutes:g} min", flush=True)
    start = time.perf_counter()
    deadline = start + 60 * minutes
    iteration = 0
    while time.perf_counter() < deadline:
        iteration += 1
        if method == "c":  # one step at a time: an epoch is longer than the budget's granularity
            x, y = program.stream.next()
            program.step(x, y)
        else:
            metrics = program.train_iteration(iteration)
            if iteration % 10 == 0:
                shown = {
                    k: round(float(v), 3) for k, v in metrics.items() if k.startswith(("attack/", "ratio/"))
                }
                print(
                    f"  cycle {iteration} ({(time.perf_counter() - start) / 60:.1f} min): {shown}", flush=True
                )
    seconds = time.perf_counter() - start
    images = program.images_seen
    torch.save(program.classifier.state_dict(), out / f"{method}.pt")
    record = {
        "method": method,
        "label": label,
        "config": cfg.to_dict(),
        "train_s": seconds,
        "images_seen": images,
    }
    (out / f"{method}.train.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"{label}: {seconds / 60:.1f} min, {images:,} training images seen", flush=True)
    return record


def evaluate(method: str, data_dir: str, out: Path, pgd_n: int, strong_n: int) -> dict:
    from trainables.models import ClassicClassifier

    label = METHODS[method][0]
    saved = out / f"{method}.eval.json"
    if saved.exists() and saved.stat().st_mtime >= (out / f"{method}.pt").stat().st_mtime:
        print(f"{label}: evaluation of this model already in {saved}", flush=True)
        return json.loads(saved.read_text())
    cfg = ClassicConfig.from_dict({"dataset": "mnist", "data_dir": data_dir})
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    data = load_trial_data(cfg, rt)
    model = rt.module(ClassicClassifier(data.spec.channels, data.spec.num_classes))
    model.load_state_dict(torch.load(out / f"{method}.pt", map_location=rt.device))
    model.eval()
    subset = data.test.subset(pgd_n, seed=1)  # the same fixed subset for every model
    strong = Split(subset.x[:strong_n], subset.y[:strong_n])
    result = {"method": method, "label": label, "clean": float(accuracy(model, data.test.x, data.test.y))}
    pgd = run_attack("pgd", model, subset.x, subset.y)
    result["pgd40"], result["pgd40_s"] = pgd.accuracy, pgd.seconds
    masks = []
    for name in STRONG:
        r = run_attack(name, model, strong.x, strong.y, progress=lambda line, n=name: print(f"  {n} {line}"))
        result[name], result[f"{name}_s"] = r.accuracy, r.seconds
        masks.append(r.correct)
        print(f"{label}: {name} {r.accuracy:.1%} ({r.seconds:.0f}s)", flush=True)
    worst = masks[0]
    for m in masks[1:]:
        worst = worst & m
    result["worst"] = float(worst.mean())
    result["pgd_n"], result["strong_n"] = len(subset), len(strong)
    saved.write_text(json.dumps(result, indent=1))
    return result


def table(rows: list[dict], trained: dict[str, dict]) -> str:
    lines = [
        "| classifier | train time | training images | clean (10,000) | PGD-40 | APGD-CE | APGD-T "
        "| Square | worst of the three |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = trained.get(r["method"], {})
        lines.append(
            f"| {r['label']} | {t.get('train_s', float('nan')) / 60:.1f} min | {t.get('images_seen', 0):,} | "
            f"{r['clean']:.1%} | {r['pgd40']:.1%} | {r['apgd-ce']:.1%} | {r['apgd-t']:.1%} | "
            f"{r['square']:.1%} | {r['worst']:.1%} |"
        )
    n = rows[0]
    lines.append("")
    lines.append(
        f"PGD-40 on {n['pgd_n']:,} test images (eps 0.3, step 0.01, one random start); APGD-CE, "
        f"APGD-T (targeted DLR, 3 targets) and Square (5,000 queries) from ART on the first "
        f"{n['strong_n']} of them; every eps 0.3 on the [0, 1] pixel scale."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR", ""))
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall time per method")
    parser.add_argument("--methods", default="abc")
    parser.add_argument("--pgd-n", type=int, default=1000)
    parser.add_argument("--strong-n", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "learned_attacker"))
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the models saved in --out")
    args = parser.parse_args()
    if args.strong_n < 200 or args.pgd_n < 1000:
        parser.error("the comparison needs --pgd-n >= 1000 and --strong-n >= 200")
    set_cpu_threads()
    keep_freed_memory()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained = {}
    for method in args.methods:
        if not args.evaluate_only:
            trained[method] = train(method, args.data_dir, args.minutes, out)
        else:
            trained[method] = json.loads((out / f"{method}.train.json").read_text())
    rows = [evaluate(m, args.data_dir, out, args.pgd_n, args.strong_n) for m in args.methods]
    text = table(rows, trained)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
