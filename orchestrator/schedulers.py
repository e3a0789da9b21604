"""Trial schedulers: ASHA, a multi-objective ASHA (Pareto ranks from ``orchestrator.pareto``), FIFO.

For a Pareto search, plain ASHA would rank trials by one objective and kill exactly the
trials that trade it for the other. :class:`ParetoASHA` keeps ASHA's asynchronous rungs but
ranks a trial arriving at a rung by non-dominated sorting (NSGA-II's rank, then crowding
distance) among the trials recorded there, and lets it continue only if it lies in the top
``1 / reduction_factor`` (the MO-ASHA rule of Schmucker et al., 2021, with NSGA-II selection).
Trials it stops are told to Optuna as pruned (see ``orchestrator.searchers``) and are never on
the reported front.

**Rung records survive a resume.** Ray Tune never saves a scheduler's state: ``Tuner.restore``
re-creates it from ``tuner.pkl`` as it was before the first trial (ray-project/ray#30838), so
after ``orchestrator resume`` the rungs would start empty and the next trials to reach them
would be promoted whatever their score. Both ASHA schedulers here therefore rebuild their rungs
from the experiment's ``history.parquet`` (the durable record of every reported iteration) when
the first trial is added: each trial's first report at or past a rung is what ASHA recorded
there. A fresh search has no history and starts empty, as before.

**A trial at its metric's worst value is not promoted.** Ray's ASHA stops a trial only when it
is strictly below its rung's cutoff, so when most trials at a rung sit at 0 robust accuracy (the
cutoff is 0), every further trial at 0 goes on: a 60-minute random search on two cores spent the
whole hour on its first two draws, both at 0% under APGD from their first cycle to their last
(docs/SEARCH_VALUE.md, random seed 1). :class:`DurableASHA` stops a trial that joins a rung
holding other trials' records with the worst value its metric has (0 for an accuracy,
``trainables.metrics``): nothing can rank below it, so it is not in the rung's top
``1 / reduction_factor``. The first trial at a rung goes on, as in Ray's ASHA. :class:`ParetoASHA`
needs no such rule: a tie is ordered by arrival, and the latest arrival is cut.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from orchestrator.choices import ITERATION, SCHEDULERS, TRIAL_SECONDS, asha_rungs
from orchestrator.compat import tune as tune_compat
from orchestrator.pareto import crowding, pareto_ranks
from orchestrator.relocation import here

__all__ = ["ITERATION", "TRIAL_SECONDS", "DurableASHA", "ParetoASHA", "make_scheduler"]


def _history(experiment_uri: str) -> list[dict]:
    """Every reported iteration of the experiment so far, per trial in iteration order."""
    from orchestrator.results import ResultsStore
    from orchestrator.storage import Location

    if not experiment_uri:
        return []
    store = ResultsStore(Location.parse(experiment_uri))
    if not store.has_results():
        return []
    _, history, _ = store.read()
    return sorted(history, key=lambda r: (r["trial_id"], int(r.get(ITERATION) or 0)))


def _at_worst(metric: str, mode: str, value) -> bool:
    """Whether ``value`` is the worst ``metric`` can report (0 for an accuracy maximised);
    False for a metric without a finite worst value in ``mode``'s direction."""
    from trainables.metrics import describe

    known = describe(metric)
    worst = known.worst
    if known.direction != mode or not math.isfinite(worst):
        return False
    try:
        value = float(value)
    except (TypeError, ValueError):
        return False
    return value <= worst if mode == "max" else value >= worst


class _RungsFromHistory:
    """Rebuilds a scheduler's rung records from the experiment's history once, before the first
    trial is added (see module docstring). ``_replay(trial_id, t, row)`` records one report."""

    experiment_uri: str = ""
    #: The result key the rungs are in (iterations, or the trial's seconds).
    unit: str = ITERATION
    _rebuilt: bool = False

    def _rebuild(self) -> int:
        """Replay the history (once), keyed on the rungs' unit; how many reports were replayed."""
        if self._rebuilt:
            return 0
        self._rebuilt = True
        rows = _history(here(self.experiment_uri))
        for row in rows:
            if row.get(self.unit) is not None:
                self._replay(row["trial_id"], float(row[self.unit]), row)
        return len(rows)

    def _replay(self, trial_id: str, t: float, row: dict) -> None:
        raise NotImplementedError


class DurableASHA(_RungsFromHistory, ASHAScheduler):
    """Ray Tune's ASHA (one bracket) whose rung records come back on resume."""

    def __init__(self, *, experiment_uri: str = "", **kwargs):
        super().__init__(**kwargs)
        self.experiment_uri = experiment_uri
        self.unit = kwargs.get("time_attr", "training_iteration")
        self.objective = (kwargs.get("metric"), kwargs.get("mode"))
        if tune_compat.asha_brackets(self) != 1:
            raise ValueError("DurableASHA rebuilds one bracket")

    def on_trial_add(self, tune_controller, trial) -> None:
        self._rebuild()
        super().on_trial_add(tune_controller, trial)

    def _replay(self, trial_id: str, t: float, row: dict) -> None:
        tune_compat.asha_record(self, trial_id, t, row)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        metric, mode = self.objective
        t, value = result.get(self.unit), result.get(metric) if metric else None
        rung = None
        if t is not None and value is not None:
            rung = tune_compat.asha_joining_rung(self, trial.trial_id, float(t))
        others = rung is not None and bool(self.rung_records().get(rung))
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.CONTINUE and others and _at_worst(metric, mode, value):
            tune_compat.asha_count_stop(self)
            return TrialScheduler.STOP
        return action

    def rung_records(self) -> dict[float, dict[str, float]]:
        """Milestone -> {trial id: recorded value (signed so that larger is better)}."""
        return tune_compat.asha_rung_records(self)


class ParetoASHA(_RungsFromHistory, FIFOScheduler):
    """Asynchronous successive halving on several objectives (see module docstring)."""

    def __init__(
        self,
        metrics: Sequence[str],
        modes: Sequence[str],
        *,
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 3,
        time_attr: str = ITERATION,
        experiment_uri: str = "",
    ):
        super().__init__()
        self.experiment_uri = experiment_uri
        if grace_period < 1 or max_t < grace_period or reduction_factor <= 1:
            raise ValueError("need 1 <= grace_period <= max_t and reduction_factor > 1")
        self._metrics = list(metrics)
        self._signs = [1.0 if m == "max" else -1.0 for m in modes]
        self.unit = time_attr
        self._max_t = max_t
        self._rf = reduction_factor
        milestones = asha_rungs(max_t, grace_period, reduction_factor)
        self._rungs: dict[float, dict[str, list[float]]] = {m: {} for m in milestones}
        self.num_stopped = 0

    @property
    def metric(self):  # several metrics: Tune's single-metric check does not apply
        return None

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def _point(self, result: dict) -> list[float] | None:
        try:
            values = [s * float(result[m]) for m, s in zip(self._metrics, self._signs)]
        except (KeyError, TypeError, ValueError):
            return None
        return [v if math.isfinite(v) else -math.inf for v in values]

    def decide(self, trial_id: str, t: float, point: list[float]) -> str:
        """CONTINUE or STOP for a trial reaching ``t`` with objective vector ``point``."""
        for milestone in sorted(self._rungs, reverse=True):
            recorded = self._rungs[milestone]
            if t < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = point
            ids = list(recorded)
            points = [recorded[i] for i in ids]
            ranks, crowd = pareto_ranks(points), crowding(points)
            order = sorted(range(len(ids)), key=lambda i: (ranks[i], -crowd[i]))
            keep = max(1, int(len(ids) / self._rf))
            position = order.index(ids.index(trial_id))
            return TrialScheduler.CONTINUE if position < keep else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_add(self, tune_controller, trial) -> None:
        self._rebuild()
        super().on_trial_add(tune_controller, trial)

    def _replay(self, trial_id: str, t: float, row: dict) -> None:
        point = self._point(row)
        if point is not None and t < self._max_t:
            self.decide(trial_id, t, point)

    def rung_records(self) -> dict[float, dict[str, list[float]]]:
        """Milestone -> {trial id: recorded objective vector (signed: larger is better)}."""
        return {milestone: dict(recorded) for milestone, recorded in self._rungs.items()}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        point = self._point(result)
        if point is None or self.unit not in result:
            return TrialScheduler.CONTINUE
        if result[self.unit] >= self._max_t:
            return TrialScheduler.CONTINUE  # the trainable ends itself at its budget
        action = self.decide(trial.trial_id, result[self.unit], point)
        if action == TrialScheduler.STOP:
            self.num_stopped += 1
        return action

    def debug_string(self) -> str:
        sizes = ", ".join(f"t={m:g}: {len(r)}" for m, r in sorted(self._rungs.items()))
        return f"ParetoASHA: stopped {self.num_stopped}; recorded per rung: {sizes}"


def make_scheduler(
    name: str,
    metrics: Sequence[str],
    modes: Sequence[str],
    *,
    max_t: int,
    grace_period: int = 1,
    reduction_factor: float = 3,
    experiment_uri: str = "",
    time_attr: str = ITERATION,
) -> TrialScheduler:
    """``asha`` (one metric: Ray's ASHA; several: :class:`ParetoASHA`) or ``fifo``; the ASHA
    schedulers rebuild their rungs from ``experiment_uri``'s history on a resume. ``time_attr``:
    what the rungs count, :data:`ITERATION` or :data:`TRIAL_SECONDS` (``max_t`` and
    ``grace_period`` in the same unit)."""
    if name == "fifo":
        return FIFOScheduler()
    if name != "asha":
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    grace = min(grace_period, max_t)
    if len(metrics) > 1:
        return ParetoASHA(
            metrics,
            modes,
            max_t=max_t,
            grace_period=grace,
            reduction_factor=reduction_factor,
            time_attr=time_attr,
            experiment_uri=experiment_uri,
        )
    return DurableASHA(
        time_attr=time_attr,
        metric=metrics[0],
        mode=modes[0],
        max_t=max_t,
        grace_period=grace,
        reduction_factor=reduction_factor,
        experiment_uri=experiment_uri,
    )
