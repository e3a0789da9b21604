"""The cores of a time-budget search's last stretch: once no new trial starts, the running ones
share the machine (Ray Tune callback)."""

from __future__ import annotations

from ray.tune import Callback

from orchestrator.relocation import here
from orchestrator.storage import Location
from trainables.deadline import DEADLINE_FILE, TimeBudget


class CoreShare(Callback):
    """Once no new trial will start (the exploration share of the budget is over), the trials
    still running share the local machine's cores: ``threads`` in ``deadline.json``, which each
    trial reads before its next iteration (``trainables.deadline``). Before that every trial
    keeps the CPUs Ray gave it. Only for a private local Ray, whose cores are all this search's.

    Not Ray's ``ResourceChangingScheduler``: that one gives a trial more resources by pausing it
    and restoring its checkpoint in a new actor (a restart per change, the iteration under way
    lost), where a trial here takes more threads between two iterations in its own process."""

    def __init__(self, experiment_uri: str, budget_s: float, cpus: int, cpus_per_trial: float):
        self.experiment_uri, self.budget_s = experiment_uri, budget_s
        self.cpus, self.cpus_per_trial = int(cpus), cpus_per_trial
        self._running: set[str] = set()
        self._written: int | None = None

    def __getstate__(self):  # the experiment state pickles callbacks: trials start again on resume
        return {k: v for k, v in self.__dict__.items() if k not in ("_running", "_written")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._running, self._written = set(), None

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._running.add(trial.trial_id)
        self._share()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._running.discard(trial.trial_id)
        self._share()

    on_trial_error = on_trial_complete

    def _share(self) -> None:
        budget = TimeBudget(Location.parse(here(self.experiment_uri)).child(DEADLINE_FILE).uri)
        if not self._running or budget.exploring(self.budget_s):
            return
        threads = max(int(self.cpus_per_trial), self.cpus // len(self._running), 1)
        if threads != self._written:
            budget.share_cores(threads)
            self._written = threads
