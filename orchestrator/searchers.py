"""Optuna samplers behind Ray Tune's ``OptunaSearch``, and how finished trials are told to Optuna.

Ray Tune's ``OptunaSearch`` tells Optuna that every trial ended ``COMPLETE`` with its last
values, including trials that ASHA stopped after a fraction of their budget. Those partial
values are not comparable with full-budget ones: in a multi-objective study they would join
the Pareto front, and in a single-objective study TPE would treat an early, unfinished score as
final. :class:`BudgetAwareOptunaSearch` tells Optuna such trials were ``PRUNED`` instead (with
their intermediate values, which TPE uses for pruned trials), so every ``COMPLETE`` trial ran
its full budget. A diverged trial ran its course and is told ``COMPLETE`` with its reported
worst-case values, which teaches the sampler to avoid that region.

With a constraint (``orchestrator search --min-clean``), every trial told to Optuna carries
``min - val/acc`` as its constraint value (``Trial.set_constraint``, Optuna 5's replacement of
the samplers' ``constraints_func``; <= 0 is feasible). The ``tpe`` and ``nsga2`` samplers read
it: TPE ranks infeasible trials below every feasible one when it splits good from bad, NSGA-II
uses constrained domination, and ``study.best_trial`` skips infeasible trials. So the sampler
learns where the feasible region is instead of chasing robust accuracy that a collapsed
classifier wins. ``cmaes`` and ``random`` ignore constraints; for them only the leaderboard
applies it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from orchestrator.choices import MULTI_OBJECTIVE_SEARCHERS, SEARCHERS
from orchestrator.compat import tune as tune_compat
from orchestrator.compat.libs import study_view
from orchestrator.relocation import here
from orchestrator.rules import constraint_violation
from orchestrator.study import RAY_TRIAL_ID
from trainables.deadline import TimeBudget

logger = logging.getLogger(__name__)

#: The name of the Optuna constraint (``Trial.set_constraint``) of ``--min-clean``.
CONSTRAINT_KEY = "min_clean"


def make_sampler(name: str, seed: int, multi_objective: bool) -> optuna.samplers.BaseSampler:
    """``tpe`` (default; multivariate, grouped for conditional spaces, constant liar for
    parallel trials), ``cmaes``, ``random`` or ``nsga2``."""
    if multi_objective and name not in MULTI_OBJECTIVE_SEARCHERS:
        raise ValueError(
            f"searcher {name!r} is single-objective; use one of {', '.join(MULTI_OBJECTIVE_SEARCHERS)}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            tpe = optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=True,
                constant_liar=True,
                n_startup_trials=5,
            )
            return BoundedHistory(tpe)
        if name == "cmaes":
            # Conditional and categorical parameters fall back to independent TPE sampling.
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                warn_independent_sampling=False,
                independent_sampler=optuna.samplers.TPESampler(seed=seed),
            )
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    raise ValueError(f"unknown searcher {name!r}; choose from {', '.join(SEARCHERS)}")


#: Trials TPE learns from at most (Optuna recommends TPE for 100 to 1,000 trials): the newest
#: TPE_RECENT, the best TPE_BEST (its "good" group is the best 10% of trials, at most 25) and a
#: sample spread evenly over the older ones.
TPE_HISTORY = 1000
TPE_RECENT = 500
TPE_BEST = 25


class BoundedHistory(optuna.samplers.BaseSampler):
    """A sampler (TPE) that learns from at most :data:`TPE_HISTORY` trials.

    TPE walks every trial of the study several times per suggestion, in Python: a suggestion
    took 9 ms at 1,000 trials and 36 ms at 3,000, and it keeps growing (docs/performance.md,
    "The driver at scale"). Past the bound it sees the newest :data:`TPE_RECENT` trials (the
    running ones among them, for the constant liar), the best :data:`TPE_BEST` complete trials it
    has seen finish (so its "good" group stays the study's best) and a sample spread evenly
    over the older trials (its "bad" density keeps the whole search's shape). A suggestion then
    costs the same at 10,000 trials as at 1,000; below the bound nothing changes.
    """

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler,
        limit: int = TPE_HISTORY,
        recent: int = TPE_RECENT,
        best: int = TPE_BEST,
    ):
        if not 0 < recent + best < limit:
            raise ValueError(f"recent ({recent}) + best ({best}) must be under the limit ({limit})")
        self.sampler = sampler
        self.limit, self.n_recent, self.n_best = limit, recent, best
        self._reset()

    def _reset(self) -> None:
        self._checked: set[int] = set()
        self._best: list[tuple[tuple, int, Any]] = []  # (rank, number, trial), best first
        #: the trial being sampled and what the sampler sees for it (None: every trial)
        self._for: int | None = None
        self._window: list | None = None

    def __getstate__(self):  # Ray pickles the searcher: what it learnt is relearnt from the study
        state = self.__dict__.copy()
        for key in ("_checked", "_best", "_for", "_window"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def window(self, study, trials: list, states) -> list:
        """What the sampler sees of ``trials`` (the study's trials in ``states``, by number)."""
        if len(trials) <= self.limit:
            return trials
        recent, old = trials[-self.n_recent :], trials[: -self.n_recent]
        self._learn_best(study, recent if self._checked else trials)  # all of them once
        room = self.limit - self.n_recent - self.n_best
        spread = old[:: -(-len(old) // room)]
        if states is not None and TrialState.COMPLETE not in states:
            return spread + recent
        shown = {t.number for t in recent} | {t.number for t in spread}
        return [t for _, n, t in self._best if n not in shown] + spread + recent

    def _learn_best(self, study, trials: list) -> None:
        if len(study.directions) > 1:
            return  # no single order: the newest and the evenly spread sample only
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
        for trial in trials:
            if trial.number in self._checked or not trial.state.is_finished():
                continue
            self._checked.add(trial.number)
            if trial.state != TrialState.COMPLETE or not trial.values:
                continue
            violation = max(trial.constraints.values(), default=0.0)
            rank = (1, violation) if violation > 0 else (0, sign * trial.values[0])
            self._best = sorted([*self._best, (rank, trial.number, trial)], key=lambda b: b[:2])[
                : self.n_best
            ]

    def _seen(self, study, trial):
        """The study as the sampler sees it while it samples ``trial``: the window is chosen
        once per trial (one read of the study's trials, not one per question TPE asks)."""
        if self._for != trial.number:
            everything = study.get_trials(deepcopy=False)
            window = self.window(study, everything, None)
            self._for, self._window = trial.number, (None if window is everything else window)

        def trials_in(states):
            if self._window is None:
                return None
            return self._window if states is None else [t for t in self._window if t.state in states]

        return study_view(study, trials_in)

    def infer_relative_search_space(self, study, trial):
        return self.sampler.infer_relative_search_space(self._seen(study, trial), trial)

    def sample_relative(self, study, trial, search_space):
        return self.sampler.sample_relative(self._seen(study, trial), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        view = self._seen(study, trial)
        return self.sampler.sample_independent(view, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


class BudgetAwareOptunaSearch(tune_compat.OptunaSearchBase):
    """``OptunaSearch`` that reports partial-budget trials to Optuna as pruned (see module).

    With a database storage (``orchestrator.study``) the study also records what the search is
    (``study_attrs``), starts from an earlier search's finished trials (``warm_trials``, added
    once, to a study without trials) and tags each trial with its Ray Tune trial id.
    """

    def __init__(
        self,
        *args,
        budget_key: str,
        budget: int,
        constraint: dict | None = None,
        study_attrs: dict | None = None,
        warm_trials: Sequence = (),
        deadline_file: str = "",
        time_budget_s: float = 0.0,
        **kwargs,
    ):
        self.deadline_file = deadline_file
        self.time_budget_s = float(time_budget_s)
        # Set first: OptunaSearch.__init__ creates the study (study_ready) for a given space.
        self.budget_key = budget_key
        self.budget = int(budget)
        self.constraint = constraint
        self.study_attrs = dict(study_attrs or {})
        self.warm_trials = list(warm_trials)
        super().__init__(*args, **kwargs)

    def study_ready(self, study) -> None:
        fresh = not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        for key, value in getattr(self, "study_attrs", {}).items():
            study.set_user_attr(key, value)
        objectives = getattr(self, "study_attrs", {}).get("objectives")
        if objectives and len(objectives) == len(study.directions):
            with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5.0
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([metric for metric, _ in objectives])  # the dashboard's labels
        if fresh and getattr(self, "warm_trials", None):
            study.add_trials(self.warm_trials)
        self.warm_trials = []  # not kept in the pickled searcher state

    def suggest(self, trial_id: str):
        if getattr(self, "deadline_file", "") and not TimeBudget(here(self.deadline_file)).exploring(
            self.time_budget_s
        ):
            return Searcher.FINISHED  # the rest of --time-budget goes to the trials running now
        suggestion = super().suggest(trial_id)
        asked = tune_compat.optuna_trials(self).get(trial_id)
        if asked is not None and isinstance(suggestion, dict):
            asked.set_user_attr(RAY_TRIAL_ID, trial_id)
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._reported = getattr(self, "_reported", {})  # absent in searchers pickled before it
        self._reported[trial_id] = int(result.get("training_iteration", 0))
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Told finished (e.g. pruned by ASHA) just before a driver was killed, after Ray
            # Tune last saved its state: the resumed search runs the trial again from its
            # checkpoint. The study keeps what it was told; the trials table has the rest.
            logger.info("trial %s: a result after Optuna was told it finished; not reported", trial_id)

    def _full_budget(self, result: dict[str, Any]) -> bool:
        if result.get("deadline_end"):
            return True  # the search's deadline ended it: it ran its course (trainables.deadline)
        budget = result.get("config", {}).get(self.budget_key, self.budget)
        return int(result.get("iteration", result.get("training_iteration", 0))) >= int(budget)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        asked = tune_compat.optuna_trials(self).get(trial_id)
        try:
            return self._complete(trial_id, result, error)
        finally:
            if asked is not None and getattr(self, "_told", None) is not None:
                self._told.add(asked.number)

    def save(self, checkpoint_path: str):
        told = self.__dict__.pop("_told", None)  # a restored searcher reads it from the study
        try:
            super().save(checkpoint_path)
        finally:
            if told is not None:
                self._told = told

    def _complete(self, trial_id: str, result: dict | None, error: bool):
        completed, asked = tune_compat.completed_trial_ids(self), tune_compat.optuna_trials(self)
        if trial_id in completed or trial_id not in asked:
            return super().on_trial_complete(trial_id, result, error)
        if self._told_already(asked[trial_id]):
            # A resume: the study (a database) was told before the driver stopped, the searcher's
            # pickle is older. Telling again would only log Optuna's "Cannot tell a COMPLETE trial".
            logger.info("trial %s: Optuna was told its outcome before the resume", trial_id)
            completed.add(trial_id)
            return None
        constraint = getattr(self, "constraint", None)  # absent in searchers pickled before it
        if constraint:
            value = (result or {}).get(constraint["metric"])
            asked[trial_id].set_constraint(CONSTRAINT_KEY, constraint_violation(value, constraint))
        if error or not result:
            return super().on_trial_complete(trial_id, result, error)
        self._report_last_result(asked[trial_id], trial_id, result)
        if result.get("diverged") or self._full_budget(result):
            return super().on_trial_complete(trial_id, result, error)
        try:
            tune_compat.searcher_study(self).tell(asked[trial_id], state=TrialState.PRUNED)
        except Exception as exc:  # Optuna refuses e.g. a trial it already finished
            logger.warning("could not tell Optuna trial %s was pruned: %s", trial_id, exc)
        completed.add(trial_id)

    def _told_already(self, trial) -> bool:
        """Whether the study has ``trial`` finished: read from the study once per driver (a
        resumed one's study may be ahead of its pickle), then kept as this searcher tells."""
        if getattr(self, "_told", None) is None:
            finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            study = tune_compat.searcher_study(self)
            self._told = {t.number for t in study.get_trials(deepcopy=False, states=finished)}
        return trial.number in self._told

    def _report_last_result(self, trial, trial_id: str, result: dict) -> None:
        """The result a trial ended on (ASHA stopped it, or it reached its budget) never reaches
        ``on_trial_result`` (Ray Tune skips the searcher when the scheduler says STOP): report it
        as the trial's last intermediate value, so the study (and TPE, which ranks pruned trials
        by it) holds every value the scheduler judged, as history.parquet has them."""
        step = int(result.get("training_iteration", 0))
        value = result.get(self.metric) if isinstance(self.metric, str) else None
        reported = getattr(self, "_reported", {}).get(trial_id, 0)
        if value is None or not math.isfinite(value) or step <= reported:
            return
        try:
            trial.report(float(value), step)
        except Exception as exc:  # e.g. a trial Optuna already finished
            logger.info("could not report trial %s's last result to Optuna: %s", trial_id, exc)


def make_searcher(
    space: Callable[[Any], dict],
    metrics: Sequence[str],
    modes: Sequence[str],
    *,
    searcher: str,
    seed: int,
    budget_key: str,
    budget: int,
    constraint: dict | None = None,
    storage=None,
    study_name: str | None = None,
    study_attrs: dict | None = None,
    warm_trials: Sequence = (),
    points_to_evaluate: Sequence[dict] = (),
    deadline_file: str = "",
    time_budget_s: float = 0.0,
) -> BudgetAwareOptunaSearch:
    """The Optuna searcher of a search: one metric, or several for a Pareto search;
    ``constraint`` (``{"metric", "min"}``) makes it a constrained study; ``storage`` and
    ``study_name`` keep the study in a database (``orchestrator.study``), ``warm_trials`` and
    ``points_to_evaluate`` start it from an earlier search; ``deadline_file`` (``--time-budget``)
    stops it proposing trials late in the budget (``trainables.deadline``)."""
    multi = len(metrics) > 1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler(searcher, seed, multi)
    return BudgetAwareOptunaSearch(
        space=space,
        metric=list(metrics) if multi else metrics[0],
        mode=list(modes) if multi else modes[0],
        sampler=sampler,
        budget_key=budget_key,
        budget=budget,
        constraint=constraint,
        storage=storage,
        study_name=study_name,
        study_attrs=study_attrs,
        warm_trials=warm_trials,
        points_to_evaluate=list(points_to_evaluate) or None,
        deadline_file=deadline_file,
        time_budget_s=time_budget_s,
    )
