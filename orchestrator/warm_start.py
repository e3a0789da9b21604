"""``--warm-start NAME``: a search that starts from an earlier search of the same space.

The new study gets the earlier experiment's finished trials (so TPE's model starts informed),
and the earlier search's best configurations run first. Everything is checked against the new
search's space, fixed values and ranges before any work starts (one-line :class:`UserError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.errors import UserError
from orchestrator.results import CorruptResults, load_results
from orchestrator.settings import load_settings
from orchestrator.storage import Location
from search_spaces.introspect import ConstrainedSpace


def warm_start(settings, space, params, fixed, ranges, objectives, storage) -> tuple[list, list]:
    """``--warm-start NAME``: the earlier experiment's finished trials and best configurations,
    checked against this search's space (one-line :class:`UserError` on any mismatch)."""
    if not settings.warm_start:
        return [], []
    if settings.warm_start_top < 0:
        raise UserError("--warm-start-top must not be negative")
    try:
        record = load_settings(settings.warm_start, storage)
    except UserError as exc:
        raise UserError(f"--warm-start {settings.warm_start}: {exc}") from None
    if record.get("space") != space.name:
        raise UserError(
            f"--warm-start {settings.warm_start}: a search of space {record.get('space')!r}, "
            f"not {space.name!r}"
        )
    try:
        trials, _ = load_results(Location.parse(record["experiment_uri"]))
    except FileNotFoundError:
        raise UserError(f"--warm-start {settings.warm_start}: the experiment has no results yet") from None
    except CorruptResults as exc:
        raise UserError(f"--warm-start {settings.warm_start}: {exc}") from None
    if [list(o) for o in objectives] != [list(o) for o in record.get("objectives", [])]:
        raise UserError(
            f"--warm-start {settings.warm_start}: it optimised {record.get('objectives')}, this search "
            f"{[list(o) for o in objectives]}"
        )
    searched = [p["name"] for p in record.get("params", [])]
    return warm_trials(
        trials.to_pylist(),
        searched=searched,
        objectives=objectives,
        space=ConstrainedSpace(space.space, fixed, ranges),
        names=set(params),
        fixed=fixed,
        top=settings.warm_start_top,
    )


def warm_trials(
    rows: Sequence[Mapping[str, Any]],
    *,
    searched: Iterable[str],
    objectives: Sequence[tuple[str, str]],
    space,
    names: Iterable[str],
    fixed: Mapping[str, Any],
    top: int,
) -> tuple[list, list[dict[str, Any]]]:
    """From an earlier experiment's trial rows: its finished trials as Optuna ``FrozenTrial``s
    for the new study (completed and diverged -> COMPLETE with their objective values,
    early-stopped -> PRUNED), and the searched parameters of its ``top`` best completed ones
    (feasible first), to run first.

    ``searched``: the earlier search's searched parameters; ``space``: the new search's space
    with its fixed values and narrowed ranges (``ConstrainedSpace``); ``names``: every parameter
    of the new space. A parameter the new space does not have, a value outside the new search's
    range or choices, or one that differs from a value the new search fixes raises
    :class:`UserError` (one line)."""
    import optuna
    from optuna.trial import TrialState

    searched, names = set(searched), set(names)
    frozen, ranked = [], []
    for row in rows:
        outcome = row.get("outcome")
        if outcome not in ("completed", "early_stopped", "diverged"):
            continue
        tid = row["trial_id"]
        config = {k[len("config/") :]: v for k, v in row.items() if k.startswith("config/") and v is not None}
        distributions, params = _fitted(tid, config, searched, names, fixed, space)
        values = [row.get(f"last/{m}") for m, _ in objectives]
        if outcome == "early_stopped" or any(v is None for v in values):
            state, values = TrialState.PRUNED, None
        else:
            state = TrialState.COMPLETE
            ranked.append((values, params, row.get("feasible") is not False))
        frozen.append(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                values=values,
                state=state,
                user_attrs={"warm_start_from": tid},
            )
        )
    sign = [1.0 if mode == "max" else -1.0 for _, mode in objectives]
    ranked.sort(key=lambda r: (not r[2], [-s * v for s, v in zip(sign, r[0])]))
    return frozen, [dict(params) for _, params, _ in ranked[:top]]


def _fitted(tid: str, config: Mapping[str, Any], searched: set, names: set, fixed, space):
    """The Optuna distributions and parameters of an earlier trial's ``config`` in the new
    search's ``space`` (one-line :class:`UserError` where it does not fit)."""
    from search_spaces.introspect import distributions_for

    for key in sorted(searched & set(config)):
        if key not in names:
            raise UserError(f"--warm-start: trial {tid} searched {key!r}, which this space does not have")
        if key in fixed and config[key] != fixed[key]:
            raise UserError(
                f"--warm-start: trial {tid} has {key}={config[key]!r}, "
                f"but this search fixes {key}={fixed[key]!r}"
            )
    distributions = distributions_for(space, config)
    params = {}
    for key, dist in distributions.items():
        if key not in config:
            raise UserError(f"--warm-start: trial {tid} has no value for {key!r}, which this space searches")
        if not _allows(dist, config[key]):
            raise UserError(f"--warm-start: trial {tid} has {key}={config[key]!r}, outside {_show(dist)}")
        params[key] = config[key]
    return distributions, params


def _allows(dist, value: Any) -> bool:
    """Whether Optuna distribution ``dist`` can hold ``value``."""
    if hasattr(dist, "choices"):
        return value in dist.choices
    try:
        return dist.low <= float(value) <= dist.high
    except (TypeError, ValueError):
        return False


def _show(dist) -> str:
    if hasattr(dist, "choices"):
        return f"choices {list(dist.choices)}"
    return f"range [{dist.low:g}, {dist.high:g}]"
