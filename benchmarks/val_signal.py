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
Each model is trained and then measured before the next; its measurements are written to
``benchmarks/results/val_signal/<name>.json`` (committed), and a model with a record there is
neither trained nor measured again, so an interrupted run loses no finished model and runs of
different sessions add up.
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
from trainables.apgd import apgd  # noqa: E402
from trainables.classic import ClassicConfig, ClassicProgram  # noqa: E402
from trainables.data import Split  # noqa: E402
from trainables.evaluation import EvalSpec, evaluate  # noqa: E402
from trainables.models import ClassicClassifier  # noqa: E402
from trainables.runtime import Runtime, keep_freed_memory, seed_everything, set_cpu_threads  # noqa: E402
from trainables.trial import TrialConfig, load_trial_data  # noqa: E402

#: One JSON per measured model (every signal's per-image outcome, AutoAttack's), committed: runs
#: of different sessions add up, and a model measured once is not trained again.
RECORDS = ROOT / "benchmarks" / "results" / "val_signal"

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


#: Settings of the drawn adaptive_ratio configurations besides the draw: the README's CPU
#: settings (shorter cycles, 10,000 training images), trained for ``LEARNED_SECONDS`` each.
LEARNED_FIXED = {"train_subset": 10_000, "cycle_steps": 25, "batch_size": 64}
LEARNED_SECONDS = 150.0


def drawn_configs(seed: int = 0, gradient: int = 8, image: int = 2) -> dict[str, dict]:
    """Configurations of the ``adaptive_ratio`` space drawn at random (Optuna's RandomSampler,
    ``seed``): ``gradient`` learned-attacker ones, ``image`` image-generator ones, and the
    space's prior, each with :data:`LEARNED_FIXED`."""
    import optuna

    from search_spaces import adaptive_ratio as space
    from search_spaces.priors import Prior

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    configs: dict[str, dict] = {}
    for i, family in enumerate(["gradient"] * gradient + ["image"] * image):
        study.enqueue_trial({"generator": family})
        trial = study.ask()
        constants = space.space(trial)
        configs[f"drawn-{i}-{family}"] = {**trial.params, **constants, **LEARNED_FIXED}
        study.tell(trial, 0.0)
    prior: Prior = space.PRIORS[0]
    configs[f"prior-{prior.name}"] = {**prior.params, **LEARNED_FIXED}
    return configs


def train_learned(name: str, params: dict, data_dir: str, out: Path) -> Path:
    """Train one drawn configuration for :data:`LEARNED_SECONDS` (whole cycles, at least 2)."""
    from trainables.adaptive_ratio import AdaptiveRatioConfig, AdaptiveRatioProgram

    path = out / f"{name}.pt"
    if path.exists():
        return path
    cfg = AdaptiveRatioConfig.from_dict({"dataset": "mnist", "data_dir": data_dir, "seed": 0, **params})
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    seed_everything(cfg.seed)
    program = AdaptiveRatioProgram(cfg, rt, load_trial_data(cfg, rt))
    start, cycle = time.perf_counter(), 0
    while cycle < 2 or time.perf_counter() - start < LEARNED_SECONDS:
        cycle += 1
        program.train_iteration(cycle)
    seconds = time.perf_counter() - start
    torch.save(program.classifier.state_dict(), path)
    record = {"params": params, "cycles": cycle, "train_s": seconds, "images_seen": program.images_seen}
    (out / f"{name}.train.json").write_text(json.dumps(record, indent=1))
    print(f"{name}: {cycle} cycles, {program.images_seen:,} images in {seconds:.0f}s: {params}", flush=True)
    return path


#: The project's own torch attacks measured per image: APGD-CE, APGD-DLR and APGD-T against
#: each of the 9 most likely wrong classes, each with 10 and with 25 steps, every one run on
#: every image (so any cascade of them can be composed afterwards).
OWN_STEPS = (10, 25)
TARGETS = 9
#: Square's smaller query budget (a cheap gradient-free check), run on every image.
SQUARE_SMALL = 1000


def own_components(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict:
    """Per component: which images resist it (0/1 list) and its seconds."""
    rows: dict = {}
    with torch.no_grad():
        ranked = model(x).float().argsort(dim=1, descending=True)
    wrong = ranked[ranked != y[:, None]].view(len(y), -1)
    for steps in OWN_STEPS:
        runs = [("ce", {"loss": "ce"}), ("dlr", {"loss": "dlr"})]
        runs += [(f"t{r + 1}", {"loss": "dlr-t", "target": wrong[:, r]}) for r in range(TARGETS)]
        for key, kwargs in runs:
            gen = torch.Generator(device=x.device).manual_seed(0)
            start = time.perf_counter()
            _, correct = apgd(model, x, y, eps, steps=steps, generator=gen, **kwargs)
            rows[f"{key}{steps}"] = {
                "resisted": correct.int().tolist(),
                "s": time.perf_counter() - start,
                "steps": steps,
            }
    return rows


def recorded(name: str, n: int, records: Path) -> dict | None:
    """The committed measurements of model ``name`` on ``n`` images, if any."""
    saved = records / f"{name}.json"
    if saved.exists():
        row = json.loads(saved.read_text())
        if row.get("n") == n and "components" in row:
            return row
    return None


def measure(path: Path, split: Split, n: int, rt: Runtime, records: Path) -> dict:
    """Every signal and AutoAttack on ``path``'s model; the row is written to ``records``."""
    saved = records / f"{path.stem}.json"
    model = load(path, rt)
    subset = split.subset(n, seed=EvalSpec().seed + 1)  # the images a trial's validation attacks
    eps = TrialConfig().pgd_eps
    row: dict = {"model": path.stem, "n": n, "eps": eps, "eps_scale": "[0, 1] pixels"}
    start = time.perf_counter()
    values = evaluate(
        model,
        split,
        EvalSpec(
            **{
                **vars(TrialConfig().eval_spec()),
                "fgsm_eps": (),
                "noise": False,
                "robust_n": n,
                "clean_n": 0,
                "pgd_steps": 40,
            }
        ),
        "val",
    )
    row["clean"], row["apgd"], row["pgd40"] = values["val/acc"], values["val/apgd_acc"], values["val/pgd_acc"]
    row["val_s"] = time.perf_counter() - start
    model = model.eval()
    row["components"] = own_components(model, subset.x, subset.y, eps)
    square = run_attack("square", model, subset.x, subset.y, eps=eps, square_queries=SQUARE_SMALL)
    row["components"][f"square{SQUARE_SMALL}"] = {
        "resisted": square.correct.astype(int).tolist(),
        "s": square.seconds,
        "queries": SQUARE_SMALL,
    }
    aa = run_attack(
        "autoattack", model, subset.x, subset.y, eps=eps, targets=TARGETS,
        progress=lambda line: print(f"  {path.stem} {line}", flush=True),
    )  # fmt: skip
    row["aa"], row["aa_s"] = aa.accuracy, aa.seconds
    row["aa_broken_by"] = aa.broken_by.tolist()
    train_record = path.parent / f"{path.stem}.train.json"
    if train_record.exists():  # a drawn configuration: what it was and how long it trained
        row["training"] = json.loads(train_record.read_text())
    saved.write_text(json.dumps(row) + "\n")
    return row


#: Candidate validation / end-of-trial signals: per image the worst of these components.
def _candidates() -> dict[str, list[str]]:
    t = lambda steps, k: [f"t{r}{steps}" for r in range(1, k + 1)]  # noqa: E731
    return {
        "APGD-CE+DLR-10 (val/apgd_acc now)": ["ce10", "dlr10"],
        "APGD-CE+DLR-25": ["ce25", "dlr25"],
        "APGD-CE-10 + APGD-T-10 x3": ["ce10", *t(10, 3)],
        "APGD-CE+DLR-10 + APGD-T-10 x3": ["ce10", "dlr10", *t(10, 3)],
        "APGD-CE-10 + APGD-T-10 x9": ["ce10", *t(10, 9)],
        "APGD-CE-25 + APGD-T-25 x9": ["ce25", *t(25, 9)],
        "APGD-CE+DLR-10 + Square-1k": ["ce10", "dlr10", f"square{SQUARE_SMALL}"],
        "APGD-CE-10 + APGD-T-10 x3 + Square-1k": ["ce10", *t(10, 3), f"square{SQUARE_SMALL}"],
        "APGD-CE-25 + APGD-T-25 x9 + Square-1k": ["ce25", *t(25, 9), f"square{SQUARE_SMALL}"],
    }


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def candidate(row: dict, parts: list[str]) -> tuple[float, float]:
    """Accuracy of the cascade ``parts`` on ``row``'s images and its seconds, each part run only
    on the images the previous ones left (its seconds scaled by that share)."""
    comps = row["components"]
    alive = np.ones(row["n"], bool)
    seconds = 0.0
    for part in parts:
        seconds += comps[part]["s"] * alive.mean()
        alive &= np.array(comps[part]["resisted"], bool)
    return float(alive.mean()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR", ""))
    parser.add_argument("--extra", nargs="*", default=[], help="more classifier files to measure")
    parser.add_argument("--models", default=",".join(MODELS), help="which of the built-in classic models")
    parser.add_argument(
        "--drawn", type=int, default=8, help="learned-attacker configurations drawn from the space"
    )
    parser.add_argument("--drawn-image", type=int, default=2, help="image-generator configurations drawn")
    parser.add_argument("-n", type=int, default=TrialConfig().robust_n, help="validation images (robust_n)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "val_signal"), help="models")
    parser.add_argument(
        "--records", default=str(RECORDS), help="one JSON of measurements per model, committed"
    )
    args = parser.parse_args()
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    drawn = drawn_configs(gradient=args.drawn, image=args.drawn_image)
    if len(names) + len(drawn) + len(args.extra) < 8:
        parser.error("the comparison needs at least 8 models")
    set_cpu_threads()
    keep_freed_memory()
    out, records = Path(args.out), Path(args.records)
    out.mkdir(parents=True, exist_ok=True)
    records.mkdir(parents=True, exist_ok=True)
    # One model at a time, trained then measured, so that a session that ends midway keeps
    # (and commits) what it finished; a model with a record is neither trained nor measured.
    jobs = [(name, lambda name=name: train(name, args.data_dir, out)) for name in names]
    jobs += [
        (name, lambda name=name, params=params: train_learned(name, params, args.data_dir, out))
        for name, params in drawn.items()
    ]
    jobs += [(Path(p).stem, lambda p=p: Path(p)) for p in args.extra]
    cfg = ClassicConfig.from_dict({"dataset": "mnist", "data_dir": args.data_dir})
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    val = None
    rows = []
    for name, make in jobs:
        row = recorded(name, args.n, records)
        if row is None:
            path = make()
            val = val if val is not None else load_trial_data(cfg, rt).val
            row = measure(path, val, args.n, rt, records)
        rows.append(row)
        print(
            f"{row['model']}: clean {row['clean']:.1%}  APGD-10 {row['apgd']:.1%}  PGD-40 {row['pgd40']:.1%}"
            f"  AutoAttack {row['aa']:.1%} ({row['aa_s']:.0f}s)",
            flush=True,
        )
    report(rows, args.n)


def report(rows: list[dict], n: int) -> None:
    """The per-model table and, per candidate signal, its agreement with AutoAttack over all
    models and over the drawn learned-attacker ones."""
    print(f"\n{len(rows)} classifiers, {n} validation images each, eps 0.3 ([0, 1] scale)")
    cands = _candidates()
    reference = "AutoAttack (APGD-CE, APGD-T x9, Square-5k)"
    print(f"| model | clean | PGD-40 | {' | '.join(cands)} | {reference} | broken by Square |")
    print("|---" * (len(cands) + 5) + "|")
    for r in rows:
        values = " | ".join(f"{candidate(r, parts)[0]:.1%}" for parts in cands.values())
        square = sum(1 for b in r["aa_broken_by"] if b == 3) / r["n"]
        first = f"| {r['model']} | {r['clean']:.1%} | {r['pgd40']:.1%}"
        print(f"{first} | {values} | {r['aa']:.1%} | {square:.1%} |")
    aa = [r["aa"] for r in rows]
    learned = [i for i, r in enumerate(rows) if "-gradient" in r["model"] or r["model"].startswith("prior-")]
    columns = "Spearman vs AutoAttack, all | Spearman, learned attacker only | largest overestimate"
    print(f"\n| signal | {columns} | s per 1,000 images |")
    print("|---|---|---|---|---|")
    for label, parts in [*cands.items(), ("PGD-40, step 0.01 (seconds: with APGD-10 and clean)", None)]:
        if parts is None:
            values, secs = [r["pgd40"] for r in rows], [r["val_s"] for r in rows]
        else:
            values, secs = zip(*(candidate(r, parts) for r in rows))
        over = max(v - a for v, a in zip(values, aa))
        sub = (
            spearman([values[i] for i in learned], [aa[i] for i in learned])
            if len(learned) > 2
            else float("nan")
        )
        cost = float(np.mean(secs)) * 1000 / n
        agree = f"{spearman(list(values), aa):.3f} | {sub:.3f} ({len(learned)})"
        print(f"| {label} | {agree} | {over * 100:.1f} points | {cost:.1f} |")
    cost = float(np.mean([r["aa_s"] for r in rows])) * 1000 / n
    print(f"| AutoAttack (ART), the reference | 1 | 1 | 0 | {cost:.1f} |")


if __name__ == "__main__":
    main()
