"""The one training loop every trainable runs.

A trainable supplies a config class and a ``build`` function returning a :class:`Program`
(models, optimisers and ``train_iteration``); :func:`run_trial` does everything else the same
way for all of them: validation, seeding, device and data set-up, resuming from a checkpoint,
evaluation, divergence handling, reporting and checkpointing.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from trainables.catalog import TrainableInfo, get_info
from trainables.configs import TrialConfig
from trainables.data import Data, load_data
from trainables.deadline import TimeBudget, TrialClock, test_estimate
from trainables.evaluation import attack_steps, evaluate, metric_keys, robust_keys
from trainables.metrics import TRIAL_SECONDS, worst
from trainables.reporting import Reporter, encode_png, scalar_metrics
from trainables.runtime import (
    Runtime,
    keep_freed_memory,
    rng_state,
    seed_everything,
    set_cpu_threads,
    set_rng_state,
)
from trainables.schedules import lr_factor, ramp_factor


class Program(Protocol):
    """What a trainable hands to :func:`run_trial`.

    ``state_dict()`` must hold the evaluated classifier's weights under ``"classifier"``
    (``orchestrator export`` reads them from there): with ``weight_average`` the average, and
    the weights being trained under ``"trained_classifier"``.
    """

    classifier: nn.Module
    images_seen: int

    def train_iteration(self, iteration: int) -> dict[str, torch.Tensor]: ...

    def extra_metrics(self, iteration: int, final: bool) -> dict[str, float]: ...

    # Optional, for progress within an iteration: ``stream`` (the training BatchStream, whose
    # batches are counted) and ``planned_batches(iteration) -> int`` (how many it will draw).

    def media(self, iteration: int) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StatefulProgram:
    """Checkpointing for programs: the objects named in ``state_objects`` (modules,
    optimisers, batch streams, ``torch.Generator`` RNGs) and the plain values named in
    ``state_values`` go into ``state_dict`` and come back with ``load_state_dict``."""

    state_objects: ClassVar[tuple[str, ...]] = ()
    state_values: ClassVar[tuple[str, ...]] = ()
    #: The optimisers of the evaluated classifier: their learning rate follows ``lr_schedule``.
    classifier_optimizers: ClassVar[tuple[str, ...]] = ()
    #: The training attack's share of its eps this iteration (``eps_ramp``); 1 without a ramp.
    attack_scale: float = 1.0

    #: The moving average of the classifier's weights (``weight_average``), once there is one.
    average: nn.Module | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The classifier that validation and the test see: the average, where there is one."""
        return self.average if self.average is not None else self.classifier

    def update_average(self, decay: float) -> None:
        """After an iteration: average <- decay * average + (1 - decay) * weights (buffers too:
        BatchNorm's running statistics); the first call copies the weights."""
        if self.average is None:
            self.average = copy.deepcopy(self.classifier).eval().requires_grad_(False)
            return
        with torch.no_grad():
            mine, theirs = self.average.state_dict(), self.classifier.state_dict()
            for key, value in mine.items():
                if value.is_floating_point():
                    value.lerp_(theirs[key], 1.0 - decay)
                else:
                    value.copy_(theirs[key])

    def follow_budget(self, cfg: TrialConfig, progress: float) -> None:
        """The classifier's learning rate and the training attack's strength for ``progress``
        (0 to 1) of the trial's budget spent. The initial learning rate is kept in the
        optimiser's ``initial_lr`` (PyTorch's schedulers' key), so it travels in checkpoints."""
        factor = lr_factor(cfg.lr_schedule, progress, cfg.lr_floor)
        for name in self.classifier_optimizers:
            for group in getattr(self, name).param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor
        self.attack_scale = ramp_factor(progress, cfg.eps_ramp)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for name in self.state_objects:
            obj = getattr(self, name)
            state[name] = obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
        state.update({name: getattr(self, name) for name in self.state_values})
        if self.average is not None:  # "classifier" holds what is evaluated and exported
            state["trained_classifier"], state["classifier"] = state["classifier"], self.average.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "trained_classifier" in state:
            self.average = copy.deepcopy(self.classifier).eval().requires_grad_(False)
            self.average.load_state_dict(state["classifier"])
            state["classifier"] = state["trained_classifier"]
        for name in self.state_objects:
            obj = getattr(self, name)
            if isinstance(obj, torch.Generator):
                obj.set_state(state[name])
            else:
                obj.load_state_dict(state[name])
        for name in self.state_values:
            setattr(self, name, state[name])

    def extra_metrics(self, iteration: int, final: bool) -> dict[str, float]:
        return {}

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        return {}


@dataclass(frozen=True)
class TrainableSpec:
    """A trainable's config class and program; the rest is in its catalog entry."""

    name: str
    config_cls: type[TrialConfig]
    build: Callable[[Any, Runtime, Data], Program]

    @property
    def info(self) -> TrainableInfo:
        return get_info(self.name)

    @property
    def headline(self) -> tuple[str, ...]:
        """Keys shown on the progress line of ``orchestrator train``."""
        return self.info.headline

    @property
    def unit(self) -> str:
        """What one iteration is ("epoch", "cycle", "iteration")."""
        return self.info.unit


def _finite(values: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values())


def load_trial_data(cfg: TrialConfig, rt: Runtime) -> Data:
    """The splits a trial with config ``cfg`` trains and evaluates on, on its device."""
    return load_data(
        cfg.dataset,
        rt.device,
        data_dir=cfg.data_dir or None,
        val_size=cfg.val_size or None,
        train_subset=cfg.train_subset,
        channels_last=rt.channels_last,
    )


class _BatchCounter:
    """Counts the training batches an iteration draws and tells the reporter, at most every
    ``every_s`` seconds (a clock read per batch; no device sync)."""

    def __init__(self, reporter: Reporter, every_s: float = 0.25):
        self.reporter, self.every_s = reporter, every_s
        self.iteration, self.done, self.total, self.last = 0, 0, None, 0.0

    def start(self, iteration: int, total: int | None) -> None:
        self.iteration, self.done, self.total, self.last = iteration, 0, total, time.monotonic()
        self.reporter.progress(iteration, "training", 0, total)

    def __call__(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.reporter.progress(self.iteration, "training", self.done, self.total)


def evaluated(program: Program) -> nn.Module:
    """The classifier a program's validation and test see (its weight average, if it keeps one)."""
    return getattr(program, "evaluated", program.classifier)


class Checks:
    """A trial's validation (clean, or under attack) and its final test, with the last robust
    validation values carried between robust iterations and the test's cost told to the clock."""

    def __init__(self, cfg: TrialConfig, program: Program, data: Data, reporter: Reporter, clock: TrialClock):
        self.program, self.data, self.reporter, self.clock = program, data, reporter, clock
        self.val_spec, self.test_spec = cfg.eval_spec(), cfg.eval_spec(final=True)
        self.carried: dict[str, float] = {}

    def validate(self, it: int, robust: bool) -> tuple[dict[str, Any], float]:
        """Validation metrics (the carried robust ones added) and their seconds."""
        t1 = time.perf_counter()
        self.reporter.progress(it, "validation" if robust else "validation (clean)")
        val = evaluate(evaluated(self.program), self.data.val, self.val_spec, "val", robust=robust)
        seconds = time.perf_counter() - t1
        if robust:
            self.carried = {k: val[k] for k in robust_keys(self.val_spec, "val")}
            self.carried["val/robust_iteration"] = it
            share = float(self.carried.get("val/apgd_acc", 1.0))  # what resists the first attack
            ratio = attack_steps(self.test_spec, share) / max(attack_steps(self.val_spec, share), 1)
            test_n = self.test_spec.robust_n or len(self.data.test)
            val_n = self.val_spec.robust_n or len(self.data.val)
            self.clock.pace.validated(seconds, test_estimate(seconds, test_n, val_n, ratio))
        return {**{k: v for k, v in self.carried.items() if k not in val}, **val}, seconds

    def test(self, it: int) -> dict[str, Any]:
        t2 = time.perf_counter()
        self.reporter.progress(it, "test")
        metrics = evaluate(evaluated(self.program), self.data.test, self.test_spec, "test")
        return {**metrics, "time/test_s": time.perf_counter() - t2}


def _restore(program: Program, clock: TrialClock, state: dict[str, Any]) -> int:
    """Load a checkpoint into ``program`` and ``clock``; the iteration it was taken at."""
    program.load_state_dict(state["program"])
    set_rng_state(state["rng"])
    clock.seconds = float(state.get("clock", 0.0))
    clock.reported_at = float((state.get("metrics") or {}).get(TRIAL_SECONDS, 0.0))
    return int(state["iteration"])


def _train(program: Program, cfg: TrialConfig, it: int, counter: _BatchCounter) -> tuple[dict, float, float]:
    """One iteration's training: its scalars (one host sync), seconds and images per second."""
    t0, images0 = time.perf_counter(), program.images_seen
    planned = getattr(program, "planned_batches", None)
    counter.start(it, planned(it) if planned else None)
    tensors = program.train_iteration(it)
    if cfg.weight_average and hasattr(program, "update_average"):
        program.update_average(cfg.weight_average)
    names = list(tensors)
    values = torch.stack([tensors[k].float() for k in names]).tolist() if names else []
    seconds = time.perf_counter() - t0
    train = {f"train/{k}" if "/" not in k else k: v for k, v in zip(names, values)}
    return train, seconds, (program.images_seen - images0) / max(seconds, 1e-9)


def _checkpoint(
    spec: TrainableSpec, cfg: TrialConfig, program: Program, clock: TrialClock, metrics: dict
) -> dict:
    return {
        "trainable": spec.name,
        "config": cfg.to_dict(),
        "iteration": metrics["iteration"],
        "clock": clock.seconds,
        "program": program.state_dict(),
        "rng": rng_state(),
        "metrics": scalar_metrics(metrics),
    }


def run_trial(spec: TrainableSpec, config: Mapping[str, Any] | TrialConfig, reporter: Reporter) -> dict:
    """Run (or resume) one trial of ``spec`` and return its last report."""
    cfg = config if isinstance(config, spec.config_cls) else spec.config_cls.from_dict(config)
    set_cpu_threads()
    keep_freed_memory()
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    reporter.start(rt, cfg.budget)
    seed_everything(cfg.seed)
    data = load_trial_data(cfg, rt)
    program = spec.build(cfg, rt, data)
    clock = TrialClock(TimeBudget(cfg.deadline_file), cfg.budget)
    start, state = 0, reporter.load_checkpoint()
    if state is not None:
        start = _restore(program, clock, state)
        if (start >= cfg.budget or reporter.replay) and state.get("metrics"):
            # A checkpoint whose report the search may never have had (see
            # orchestrator.tune_trainable): its result again, with the checkpoint, so no iteration
            # is missing from the history and Tune's record names a checkpoint that exists. At its
            # last iteration the trial had finished: Tune, the searcher and the results end on it.
            reporter.report(dict(state["metrics"]), state)
            if start >= cfg.budget:
                return dict(state["metrics"])
    checks, counter = Checks(cfg, program, data, reporter, clock), _BatchCounter(reporter)
    if getattr(program, "stream", None) is not None:
        program.stream.on_batch = counter
    last: dict[str, Any] = {}
    for it in range(start + 1, cfg.budget + 1):
        progress = clock.begin(it)  # the deadline read again: a resumed search may have moved it
        threads = clock.cpu_threads()
        if threads and rt.device.type == "cpu" and threads != torch.get_num_threads():
            torch.set_num_threads(threads)  # the trials left after exploration share the cores
        if hasattr(program, "follow_budget"):
            program.follow_budget(cfg, progress)
        t0 = time.perf_counter()
        train, t_train, images_per_s = _train(program, cfg, it, counter)
        trained_at = clock.trained(t_train)  # the model this report describes is this old
        metrics: dict[str, Any] = {"iteration": it, TRIAL_SECONDS: trained_at, **train}
        if not _finite(train):
            metrics.update({k: worst(k) for k in metric_keys(checks.val_spec, "val")}, diverged=1)
            reporter.report(metrics, None)
            return metrics
        robust = it == cfg.budget or cfg.robust_iteration(
            it, first=not checks.carried, seconds=(clock.reported_at, trained_at)
        )
        val, t_eval = checks.validate(it, robust)
        final = clock.is_last(it)  # the one place where a trial decides to end
        if final and not robust:  # the last model is validated under attack too
            val, t_robust = checks.validate(it, True)
            t_eval += t_robust
        clock.validated(trained_at, t_eval)
        metrics.update(val)
        metrics.update(program.extra_metrics(it, final))
        if final:
            metrics.update(checks.test(it))
        if cfg.media_every and (it % cfg.media_every == 0 or final):
            metrics.update({f"media/{k}": encode_png(v) for k, v in program.media(it).items()})
        metrics.update(diverged=0, **({"deadline_end": 1} if clock.ended_by_deadline else {}))
        metrics.update({"time/iteration_s": time.perf_counter() - t0, "time/train_s": t_train})
        metrics.update({"time/eval_s": t_eval, "time/train_images_per_s": images_per_s})
        keep = final or it % cfg.checkpoint_every == 0
        reporter.report(metrics, _checkpoint(spec, cfg, program, clock, metrics) if keep else None)
        last = metrics
        if final:
            break
    return last
