"""Optuna's and W&B's private internals, each behind one named function (the rest of the
compatibility seam: :mod:`orchestrator.compat`).

- marking a trial of a study with a user attribute after the fact
  (:func:`set_trial_user_attr`): a ``FrozenTrial`` has no public setter, Optuna's storage API
  takes the trial's internal id (``study._storage``, ``trial._trial_id``);
- a study as a sampler sees it, its trials chosen by a function (:func:`study_view`): Optuna's
  samplers read a study's trials through its private ``Study._get_trials``;
- reading a W&B run file without W&B's service (:func:`wandb_record_class`: the ``Record``
  protobuf of ``wandb.proto.wandb_internal_pb2``; ``orchestrator.compat.wandb_files`` parses the file);
- an S3 filesystem like another but with its own retries (:func:`s3_with_attempts`): pyarrow has
  no public reader of a filesystem's options; its pickle state (``__reduce__``) holds them.
"""

from __future__ import annotations

from typing import Any


def set_trial_user_attr(study, trial, key: str, value: Any) -> None:
    """Set user attribute ``key`` of ``trial`` (a ``FrozenTrial`` of ``study``)."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


class _StudyView:
    def __init__(self, study, trials_in):
        self._study, self._trials_in = study, trials_in

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        chosen = self._trials_in(states)
        if chosen is None:
            return self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return chosen

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        chosen = self._trials_in(states)
        return self._study.get_trials(deepcopy=deepcopy, states=states) if chosen is None else chosen


def study_view(study, trials_in):
    """``study`` as a sampler sees it: every trial list it reads is ``trials_in(states)`` (the
    trials in ``states``, in number order; None: the study's own); the rest is the study's."""
    return _StudyView(study, trials_in)


def wandb_record_class():
    """The protobuf message class of one record of a W&B run file."""
    from wandb.proto import wandb_internal_pb2

    return wandb_internal_pb2.Record


def s3_with_attempts(fs, attempts: int):
    """pyarrow S3 filesystem ``fs`` again (endpoint, region, credentials source and the rest
    unchanged), trying each request at most ``attempts`` times instead of pyarrow's default
    (three, with back-off: 12 s before an unreachable endpoint is an error)."""
    import pyarrow.fs as pafs

    _, (options,) = fs.__reduce__()
    return pafs.S3FileSystem(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts))


def check() -> list[str]:
    """What is missing from the installed Optuna, W&B and pyarrow (empty when everything here exists)."""
    import optuna

    missing = []
    study = optuna.create_study()
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    try:
        set_trial_user_attr(study, frozen, "probe", 1)
        if study.get_trials(deepcopy=False)[0].user_attrs.get("probe") != 1:
            missing.append("optuna Study._storage.set_trial_user_attr")
    except AttributeError as exc:
        missing.append(f"optuna Study._storage / FrozenTrial._trial_id ({exc})")
    study.tell(trial, 0.0)
    seen = []
    sampler = optuna.samplers.TPESampler(n_startup_trials=0, multivariate=True)

    def trials_in(states):
        seen.append(states)
        return study.get_trials(deepcopy=False, states=states)

    view = study_view(study, trials_in)
    asked = study.ask()
    sampler.sample_independent(view, asked, "x", optuna.distributions.FloatDistribution(0, 1))
    if not seen:
        missing.append("optuna samplers read trials through Study._get_trials")
    try:
        record = wandb_record_class()()
        if not hasattr(record, "ParseFromString"):
            missing.append("wandb_internal_pb2.Record")
    except ImportError as exc:
        missing.append(f"wandb.proto.wandb_internal_pb2 ({exc})")
    import pyarrow.fs as pafs

    s3 = pafs.S3FileSystem(region="eu-west-1", endpoint_override="http://127.0.0.1:9", anonymous=True)
    try:
        again = s3_with_attempts(s3, 1)
        if again.__reduce__()[1] != s3.__reduce__()[1]:
            missing.append("pyarrow S3FileSystem.__reduce__ options")
    except (TypeError, ValueError) as exc:
        missing.append(f"pyarrow S3FileSystem.__reduce__ options ({exc})")
    return missing
