"""Optuna's and W&B's private internals, each behind one named function (the rest of the
compatibility seam: :mod:`orchestrator.compat`).

- marking a trial of a study with a user attribute after the fact
  (:func:`set_trial_user_attr`): a ``FrozenTrial`` has no public setter, Optuna's storage API
  takes the trial's internal id (``study._storage``, ``trial._trial_id``);
- reading a W&B run file without W&B's service (:func:`wandb_record_class`: the ``Record``
  protobuf of ``wandb.proto.wandb_internal_pb2``; ``orchestrator.wandb_files`` parses the file).
"""

from __future__ import annotations

from typing import Any


def set_trial_user_attr(study, trial, key: str, value: Any) -> None:
    """Set user attribute ``key`` of ``trial`` (a ``FrozenTrial`` of ``study``)."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def wandb_record_class():
    """The protobuf message class of one record of a W&B run file."""
    from wandb.proto import wandb_internal_pb2

    return wandb_internal_pb2.Record


def check() -> list[str]:
    """What is missing from the installed Optuna and W&B (empty when everything here exists)."""
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
    try:
        record = wandb_record_class()()
        if not hasattr(record, "ParseFromString"):
            missing.append("wandb_internal_pb2.Record")
    except ImportError as exc:
        missing.append(f"wandb.proto.wandb_internal_pb2 ({exc})")
    return missing
