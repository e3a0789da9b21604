"""Each trainable end to end for a few iterations on small synthetic data."""

import dataclasses
import functools
import math
import typing

import pytest
import torch

from tests.conftest import synthetic
from trainables import get_spec, get_trainable
from trainables.config import param
from trainables.metrics import TRIAL_SECONDS
from trainables.reporting import MemoryReporter
from trainables.trial import TrainableSpec, TrialConfig, run_trial

pytestmark = pytest.mark.train


CASES = {
    "classic": synthetic(epochs=2, adv_train="pgd", adv_steps=2, media_every=1),
    "wgan_gp": synthetic(
        iterations=2,
        gen_steps=2,
        n_critic=2,
        stages=(1, 3),
        sample_n=50,
        ref_epochs=1,
        media_every=2,
    ),
    "adaptive_ratio": synthetic(
        cycles=2, schedule="adaptive", k=2, cycle_steps=3, pretrain_epochs=1, media_every=2
    ),
    "adaptive_ratio-gradient": synthetic(
        cycles=2,
        generator="gradient",
        gen_steps=2,
        adv_copies=2,
        diversity_weight=1.0,
        schedule="adaptive",
        k=2,
        cycle_steps=3,
        pretrain_epochs=1,
        media_every=2,
    ),
}

EXPECTED = {
    "classic": ["train/loss", "train/acc", "train/adv_loss", "train/clean_loss"],
    "wgan_gp": [
        "train/wasserstein",
        "train/gen_loss",
        "train/gp",
        "train/critic_loss",
        "train/cls_real_loss",
        "train/cls_fake_loss",
        "gen/cls_acc",
        "gen/ref_acc",
        "gen/fid",
        "stage/1/cls_acc",
        "stage/1/ref_acc",
        "stage/3/ref_acc",
    ],
    "adaptive_ratio": ["ratio/k", "train/gen_loss", "train/cls_loss", "pretrain/acc", "attack/pgd10_acc"],
    "adaptive_ratio-gradient": [
        "ratio/k",
        "train/gen_loss",
        "train/gen_ce",
        "train/gen_diversity",
        "train/cls_adv_loss",
        "attack/gen_acc",
        "attack/pgd10_acc",
    ],
}
COMMON = [
    "iteration",
    "diverged",
    "val/acc",
    "val/apgd_acc",
    "val/robust_iteration",
    "time/eval_s",
    "val/fgsm_acc/eps0.1",
    "val/noise_acc/periodic/high",
]


@functools.cache
def _run(name: str, media_every: int) -> MemoryReporter:
    """One run of ``CASES[name]`` drawing media every ``media_every`` iterations (0: never),
    shared by the tests below (each reads it only)."""
    reporter = MemoryReporter()
    run_trial(get_spec(name.split("-")[0]), {**CASES[name], "media_every": media_every}, reporter)
    return reporter


@pytest.mark.parametrize("name", list(CASES))
def test_trainable_reports_its_keys(name):
    reports = _run(name, 1).reports
    assert [r["iteration"] for r in reports] == [1, 2]
    keys = set().union(*reports)
    for key in EXPECTED[name] + COMMON:
        assert key in keys, key
    last = reports[-1]
    assert {"test/acc", "test/pgd_acc", "test/apgd_acc", "time/test_s"} <= set(last), "test split at the end"
    assert "val/pgd_acc" not in keys, "validation's robust metric is APGD; PGD-40 only on test"
    assert not any(k.startswith("test/") for k in reports[0]), "and only at the end"
    assert last["diverged"] == 0
    assert any(
        k.startswith("media/") and isinstance(v, bytes) and v[:4] == b"\x89PNG" for k, v in last.items()
    )
    assert all(math.isfinite(v) for k, v in last.items() if isinstance(v, float))


@pytest.mark.parametrize("name", list(CASES))
def test_resume_continues_where_it_stopped(name):
    """Two iterations straight == one iteration, checkpoint, a fresh resume, one more."""
    config = {**CASES[name], "media_every": 0}
    straight = _run(name, 0)
    spec = get_spec(name.split("-")[0])
    budget_key = spec.config_cls.budget_key
    first = MemoryReporter()
    run_trial(spec, {**config, budget_key: 1, "checkpoint_every": 1}, first)
    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG
    resumed = MemoryReporter(resume_from=first.checkpoint)
    run_trial(spec, config, resumed)
    assert [r["iteration"] for r in resumed.reports] == [2]
    a, b = straight.reports[-1], resumed.reports[-1]
    for key in a:
        if key.startswith(("train/", "attack/")) or key in ("val/acc", "val/loss", "ratio/k"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("name", list(CASES))
def test_drawing_media_does_not_change_training(name):
    runs = [_run(name, every).reports[-1] for every in (0, 1)]
    for key in runs[0]:
        if key.startswith("train/") or key == "val/acc":
            assert runs[0][key] == pytest.approx(runs[1][key], rel=1e-6), key


def test_adaptive_ratio_schedules_drive_k():
    fixed = MemoryReporter()
    run_trial(
        get_spec("adaptive_ratio"),
        synthetic(cycles=2, k=3, cycle_steps=2, pretrain_epochs=0),
        fixed,
    )
    assert [r["ratio/k"] for r in fixed.reports] == [3.0, 3.0]
    stepped = MemoryReporter()
    cfg = synthetic(cycles=3, schedule="stepped", k_steps="1:1,3:4", cycle_steps=2, pretrain_epochs=0)
    run_trial(get_spec("adaptive_ratio"), cfg, stepped)
    assert [r["ratio/k"] for r in stepped.reports] == [1.0, 1.0, 4.0]
    adaptive = MemoryReporter()
    cfg = synthetic(cycles=3, schedule="adaptive", k=2, target_gen_loss=0.0, k_factor=2.0, cycle_steps=2)
    run_trial(get_spec("adaptive_ratio"), cfg, adaptive)
    # Nothing gets the loss under a 0.0 target: k grows every cycle.
    assert [r["ratio/k"] for r in adaptive.reports] == [2.0, 4.0, 8.0]


class _NaNProgram:
    def __init__(self, cfg, rt, data):
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 10))
        self.images_seen = 0

    def train_iteration(self, iteration):
        value = float("nan") if iteration == 2 else 1.0
        return {"loss": torch.tensor(value)}

    def extra_metrics(self, iteration, final):
        return {}

    def media(self, iteration):
        return {}

    def state_dict(self):
        return {"classifier": self.classifier.state_dict()}

    def load_state_dict(self, state):
        pass


@dataclasses.dataclass(frozen=True)
class _FiveIterations(TrialConfig):
    iterations: int = param(5, lo=1)


def test_non_finite_loss_ends_the_trial_with_diverged_flag():
    spec = TrainableSpec("nan", _FiveIterations, _NaNProgram)
    reporter = MemoryReporter()
    last = run_trial(spec, synthetic(pgd_steps=1), reporter)
    assert [r["iteration"] for r in reporter.reports] == [1, 2], "the trial stops at the divergence"
    assert last["diverged"] == 1 and reporter.reports[0]["diverged"] == 0
    assert last["val/acc"] == 0.0 and last["val/apgd_acc"] == 0.0, "finite worst-case sentinels"
    assert math.isnan(last["train/loss"])


def test_train_function_outside_tune_prints_progress(capsys):
    get_trainable("classic")(synthetic(epochs=1, pgd_steps=1, noise_eval=False))
    out = capsys.readouterr().out
    assert "classic epoch 1/1" in out


class _DriftProgram(_NaNProgram):
    """A classifier whose weights change every iteration, so fresh robust values differ."""

    def train_iteration(self, iteration):
        with torch.no_grad():
            for p in self.classifier.parameters():
                p.add_(torch.randn_like(p))
        self.images_seen += 1
        return {"loss": torch.tensor(1.0)}


@dataclasses.dataclass(frozen=True)
class _SixIterations(TrialConfig):
    iterations: int = param(6, lo=1)


def test_robust_metrics_every_nth_iteration_at_rungs_and_last_carried_between():
    spec = TrainableSpec("drift", _SixIterations, _DriftProgram)
    reporter = MemoryReporter()
    run_trial(spec, synthetic(robust_every=3, robust_rungs=(2,), noise_eval=False, robust_n=64), reporter)
    reports = reporter.reports
    measured = [r["val/robust_iteration"] for r in reports]
    # 1: nothing to carry yet; 2: an ASHA rung; 3 and 6: every third; 6: the last.
    assert measured == [1, 2, 3, 3, 3, 6]
    assert reports[3]["val/apgd_acc"] == reports[2]["val/apgd_acc"] == reports[4]["val/apgd_acc"]
    assert reports[3]["val/loss"] != reports[2]["val/loss"], "clean metrics are measured every iteration"
    assert all(r["time/eval_s"] >= 0 for r in reports)
    assert reports[3]["time/eval_s"] < reports[2]["time/eval_s"], "carried iterations skip the attacks"


class _TenSecondsPerIteration(_DriftProgram):
    """Training takes ten seconds of a fake clock; validation and testing none."""

    clock: typing.ClassVar[list[float]] = [0.0]

    def train_iteration(self, iteration):
        self.clock[0] += 10.0
        return super().train_iteration(iteration)


def test_a_trials_clock_counts_its_seconds_crosses_rungs_in_seconds_and_survives_a_restore(monkeypatch):
    import types

    import trainables.trial as trial_module

    clock = _TenSecondsPerIteration.clock
    clock[0] = 0.0
    monkeypatch.setattr(
        trial_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0], monotonic=lambda: clock[0])
    )
    spec = TrainableSpec("clocked", _SixIterations, _TenSecondsPerIteration)
    config = synthetic(robust_every=100, robust_rungs_s=(15.0, 45.0), noise_eval=False, robust_n=32)
    straight = MemoryReporter()
    run_trial(spec, config, straight)
    assert [r[TRIAL_SECONDS] for r in straight.reports] == [10, 20, 30, 40, 50, 60]
    # 1: nothing to carry yet; 2: its model crossed 15 s; 5: crossed 45 s; 6: the last.
    assert [r["val/robust_iteration"] for r in straight.reports] == [1, 2, 2, 2, 5, 6]
    first = MemoryReporter()
    run_trial(spec, {**config, "iterations": 3}, first)
    resumed = MemoryReporter(resume_from=first.checkpoint)
    run_trial(spec, config, resumed)
    assert [r[TRIAL_SECONDS] for r in resumed.reports] == [40, 50, 60], (
        "the clock goes on from the checkpoint"
    )
    assert [r["val/robust_iteration"] for r in resumed.reports] == [4, 5, 6]


class _ProgressRecorder(MemoryReporter):
    def __init__(self):
        super().__init__()
        self.calls = []

    def progress(self, iteration, phase, done=0, total=None):
        self.calls.append((iteration, phase, done, total))


def test_progress_within_an_iteration_counts_training_batches_then_evaluation(monkeypatch):
    import trainables.trial as trial_module

    monkeypatch.setattr(trial_module._BatchCounter, "__init__", _counter_every_batch)
    reporter = _ProgressRecorder()
    run_trial(get_spec("classic"), synthetic(epochs=1, noise_eval=False), reporter)
    training = [c for c in reporter.calls if c[1] == "training"]
    total = training[0][3]
    assert total == 256 // 32, "an epoch's batches: the subset over the batch size"
    assert [c[2] for c in training] == list(range(total + 1)), "every batch counted, in order"
    assert [c[1] for c in reporter.calls if c[1] != "training"] == ["validation", "test"]


def _counter_every_batch(self, reporter, every_s=0.25):
    self.reporter, self.every_s = reporter, 0.0
    self.iteration, self.done, self.total, self.last = 0, 0, None, 0.0


def test_console_progress_writes_lines_when_not_a_terminal():
    import io

    from trainables.reporting import ConsoleReporter

    lines = []
    reporter = ConsoleReporter("classic", 2, "epoch", ("val/acc",), echo=lines.append)
    reporter.stream = io.StringIO()  # not a terminal: a plain line every LINE_EVERY_S
    reporter.LINE_EVERY_S = 0.0
    reporter.progress(1, "training", 5, 10)
    reporter.progress(1, "validation")
    reporter.report({"iteration": 1, "val/acc": 0.5}, None)
    written = reporter.stream.getvalue().splitlines()
    assert written == [
        "classic epoch 1/2 training [##########..........] 5/10 batches, 0s",
        "classic epoch 1/2 validation..., 0s",
    ]
    assert lines == ["classic epoch 1/2 | val/acc 0.5000"]


def test_the_catalog_names_each_trainables_own_config_class():
    """`orchestrator params` reads the config class the catalog names (torch-free): it must be
    the one the trainable trains with."""
    from trainables import TRAINABLES, get_spec
    from trainables.catalog import config_class

    for name in TRAINABLES:
        assert config_class(name) is get_spec(name).config_cls, name
