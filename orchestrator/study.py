"""The Optuna study of a search, in a real database.

Every search keeps its study in an Optuna storage that other tools can read (optuna-dashboard,
``optuna.load_study``): by default the SQLite file ``study.db`` in a local experiment folder;
for an experiment on remote storage (``s3://...``), where SQLite cannot live, a SQLite file on
the driver under ``~/.cache/orchestrator/studies/<name>.db`` (the driver is the only writer),
copied to ``<experiment>/study.db`` at every results flush and fetched from there by a driver
on another machine (``orchestrator.study_sync``);
``--study-storage URL`` takes any Optuna storage URL unchanged (``sqlite:///...``,
``postgresql://...``, ``mysql://...``) or ``journal:///path/file.log`` for Optuna's journal
file. The study is named after the experiment and records the space, the trainable, the
objectives and the constraint as user attributes; each of its trials carries its Ray Tune trial
id (user attribute ``ray_trial_id``).

After a search ends (or is resumed after a killed driver), :func:`reconcile` makes the study
agree with ``trials.parquet``: one trial per Ray Tune trial in the state the project's rules
give it, and no trial left ``RUNNING`` (an Optuna trial asked for by a driver that was killed
before it saved its state is marked ``FAIL`` with the user attribute ``orphaned``).

This module imports Optuna but neither Ray nor torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator import relocation
from orchestrator.compat.libs import set_trial_user_attr
from orchestrator.errors import UserError
from orchestrator.storage import Location, is_uri

STUDY_FILE = "study.db"
RAY_TRIAL_ID = "ray_trial_id"
JOURNAL_PREFIX = "journal:///"
#: The study state each trials.parquet outcome implies (orchestrator.searchers' rules).
OUTCOME_STATE = {
    "completed": "COMPLETE",
    "diverged": "COMPLETE",
    "early_stopped": "PRUNED",
    "error": "FAIL",
}


def default_study_url(experiment: Location, name: str) -> str:
    """``sqlite:///<experiment>/study.db``, or a driver-local file for a remote experiment."""
    if not is_uri(experiment.uri):
        return f"sqlite:///{Path(experiment.path) / STUDY_FILE}"
    root = Path(os.environ.get("ORCHESTRATOR_CACHE_DIR", Path.home() / ".cache" / "orchestrator"))
    return f"sqlite:///{root / 'studies' / f'{name}.db'}"


def open_storage(url: str, create: bool = False, what: str = "study storage"):
    """The Optuna storage of ``url`` (an RDB URL passed to Optuna unchanged, or
    ``journal:///path`` for a journal file); :class:`UserError` (one line) when it cannot be
    opened. A SQLite or journal file is created (with its folder) only when ``create``: a
    command that reads a study never leaves a new folder or an empty database behind. ``what``
    names the URL in messages (``--study-storage`` where the user gave it)."""
    import optuna

    path = _file_of(url)
    if path is not None and not create and not path.exists():
        raise UserError(f"{what} {redact(url)}: there is no {path}")
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        if url.startswith(JOURNAL_PREFIX):
            return optuna.storages.JournalStorage(_journal_class()(str(path)))
        return _storage_class()(url, engine_kwargs=_engine_kwargs(url))
    except Exception as exc:  # SQLAlchemy / driver errors of every kind
        cause = _cause(exc)
        if "import DB access module" in cause or isinstance(exc, ImportError):
            cause += "; install the database's Python driver (PostgreSQL: pip install -e '.[postgres]')"
        raise UserError(f"{what} {redact(url)}: cannot open it ({cause})") from None


def _file_of(url: str) -> Path | None:
    """The file of a SQLite or journal URL (None for a database server)."""
    if url.startswith(JOURNAL_PREFIX):
        return Path("/" + url[len(JOURNAL_PREFIX) :].lstrip("/"))  # journal:////abs as sqlite:////abs
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


def _cause(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_readable(url: str, study: str, experiment: str) -> None:
    """Study ``study`` of experiment ``experiment`` can be read from ``url``; else one line that
    names the cause (missing, not there, damaged) and how to recover, before any work."""
    import optuna

    fresh = f"`orchestrator resume {experiment} --fresh`"
    path = _file_of(url)
    if path is not None and not path.exists():
        raise UserError(
            f"experiment {experiment!r} has no study database at {path}: pass the experiment's study "
            f"with --study-storage URL, or start over beside its finished trials with {fresh}"
        )
    try:
        storage = open_storage(url)
        optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        raise UserError(
            f"study {study!r} is not in {redact(url)}: pass the experiment's study with "
            f"--study-storage URL, or start over beside its finished trials with {fresh}"
        ) from None
    except Exception as exc:
        repair = (
            f"repair it (sqlite3 {path} .recover | sqlite3 repaired.db, then put repaired.db in "
            f"its place) or move it aside and run {fresh}"
            if path is not None and url.startswith("sqlite")
            else f"repair it, or pass another with --study-storage and run {fresh}"
        )
        cause = _cause(exc)
        if isinstance(exc, UserError):
            cause = cause.removeprefix(f"study storage {redact(url)}: ")
        raise UserError(
            f"the study database {redact(url)} of {experiment!r} is damaged or unreadable ({cause}); "
            f"its trials are safe in trials.parquet: {repair}"
        ) from None


#: Where a pickled study storage finds its password again (the storage URL is pickled without it).
PASSWORD_ENV = "ORCHESTRATOR_STUDY_PASSWORD"
_STORAGE_CLASS = None


def _storage_class():
    """Optuna's RDBStorage, pickled without the URL's password.

    Ray Tune pickles the searcher, and with it the study's storage, into ``tuner.pkl``, the
    searcher state and its session folder (which go to the bucket on ``s3://`` storage). Here the
    pickle holds the URL with ``***`` for the password, and unpickling puts back the password
    from ``$ORCHESTRATOR_STUDY_PASSWORD`` (which opening a URL with a password sets for this
    process); without it a PostgreSQL driver reads ``PGPASSWORD`` or ``~/.pgpass`` itself."""
    global _STORAGE_CLASS
    if _STORAGE_CLASS is None:
        from optuna.storages import RDBStorage

        class SecretFreeRDBStorage(RDBStorage):
            def __init__(self, url: str, **kwargs):
                password = _password(url)
                if password:
                    os.environ[PASSWORD_ENV] = password
                super().__init__(url, **kwargs)
                _sqlite_without_fsync(self.engine)

            def __getstate__(self):
                state = super().__getstate__()
                state["url"] = without_password(state["url"])
                return state

            def __setstate__(self, state):
                state = dict(state)
                url = relocation.here(state["url"])  # the experiment (and its study.db) moved
                state["url"] = with_password(url, os.environ.get(PASSWORD_ENV, ""))
                super().__setstate__(state)
                _sqlite_without_fsync(getattr(self, "engine", None))

        SecretFreeRDBStorage.__module__ = __name__
        SecretFreeRDBStorage.__qualname__ = "SecretFreeRDBStorage"
        _STORAGE_CLASS = SecretFreeRDBStorage
        globals()["SecretFreeRDBStorage"] = SecretFreeRDBStorage
    return _STORAGE_CLASS


_JOURNAL_CLASS = None


def _journal_class():
    """Optuna's journal file, pickled as its path and unpickled where the experiment is now.

    Ray Tune pickles the searcher with its study's storage; Optuna's own journal file pickles
    its absolute path and an index of every line it read, so a resume of a moved or copied
    experiment would write into the old file (the original of a copy)."""
    global _JOURNAL_CLASS
    if _JOURNAL_CLASS is None:
        from optuna.storages.journal import JournalFileBackend

        class MovableJournalFile(JournalFileBackend):
            def __init__(self, file_path: str):
                self.path = file_path
                super().__init__(file_path)

            def __getstate__(self):
                return {"path": self.path}

            def __setstate__(self, state):
                self.__init__(relocation.here(state["path"]))

        MovableJournalFile.__module__ = __name__
        MovableJournalFile.__qualname__ = "MovableJournalFile"
        _JOURNAL_CLASS = MovableJournalFile
        globals()["MovableJournalFile"] = MovableJournalFile
    return _JOURNAL_CLASS


def __getattr__(name: str):
    # Unpickling finds the classes without importing optuna first.
    if name == "SecretFreeRDBStorage":
        return _storage_class()
    if name == "MovableJournalFile":
        return _journal_class()
    raise AttributeError(name)


def _split_credentials(url: str) -> tuple[str, str, str | None, str] | None:
    """``scheme``, ``user``, ``password`` (None: none), ``host/path`` of a URL with credentials."""
    if "://" not in url or "@" not in url.split("://", 1)[1]:
        return None
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user, _, password = creds.partition(":")
    return scheme, user, (password if ":" in creds else None), host


def _password(url: str) -> str:
    parts = _split_credentials(url)
    return (parts[2] or "") if parts and parts[2] != "***" else ""


def without_password(url: str) -> str:
    parts = _split_credentials(url)
    if parts is None or parts[2] is None:
        return url
    scheme, user, _, host = parts
    return f"{scheme}://{user}:***@{host}"


def with_password(url: str, password: str) -> str:
    """``url`` with its ``***`` password replaced by ``password`` (removed when there is none:
    the database driver then looks for one itself, e.g. ``PGPASSWORD`` or ``~/.pgpass``)."""
    parts = _split_credentials(url)
    if parts is None or parts[2] != "***":
        return url
    scheme, user, _, host = parts
    return f"{scheme}://{user}:{password}@{host}" if password else f"{scheme}://{user}@{host}"


def saved_url_usable(url: str) -> str:
    """A saved (redacted) study URL made usable again: its password from
    ``$ORCHESTRATOR_STUDY_PASSWORD``, or, for PostgreSQL, left to ``PGPASSWORD`` / ``~/.pgpass``;
    :class:`UserError` when nothing can supply it."""
    if "***@" not in url:
        return url
    password = os.environ.get(PASSWORD_ENV, "")
    pgpass = Path(os.environ.get("PGPASSFILE", "~/.pgpass")).expanduser()
    if password or (url.startswith("postgresql") and (os.environ.get("PGPASSWORD") or pgpass.exists())):
        return with_password(url, password)
    raise UserError(
        "the study storage URL has a password, which is never saved: set "
        f"{PASSWORD_ENV} (or PGPASSWORD / ~/.pgpass for PostgreSQL), or pass --study-storage URL"
    )


def _sqlite_without_fsync(engine) -> None:
    """A SQLite study commits without an fsync (``PRAGMA synchronous=OFF``): Optuna commits about
    14 times per trial, and each fsync cost 4.7 ms of the driver's single thread
    (docs/performance.md, "The driver at scale"). A killed driver loses nothing (the writes are
    in the OS's cache); only a crash of the machine itself could damage the file, which
    ``resume`` then names (the Parquet results, written with fsync, stay)."""
    if engine is None or engine.url.get_backend_name() != "sqlite":
        return
    from sqlalchemy import event

    event.listen(engine, "connect", lambda connection, _: connection.execute("PRAGMA synchronous=OFF"))
    engine.dispose()  # connections opened before the listener close; new ones get the pragma


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}  # the dashboard may read while the driver writes
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def redact(url: str) -> str:
    """``url`` without a password (for messages and files)."""
    return without_password(url)


def check_study(storage, name: str, space: str, objectives: Sequence[tuple[str, str]] = ()) -> None:
    """Refuse an existing study ``name`` in ``storage`` that belongs to another space, or that
    optimises other objectives or in other directions than ``objectives`` (``(metric, mode)``):
    joining it would rank this search's trials backwards or fail after training."""
    import optuna

    for summary in optuna.study.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name != name:
            continue
        other = summary.user_attrs.get("space")
        if other and other != space:
            raise UserError(
                f"study {name!r} in the study storage belongs to space {other!r}, not {space!r}; "
                "pick another --name"
            )
        if not objectives:
            continue
        wanted = [list(o) for o in objectives]
        theirs = summary.user_attrs.get("objectives")
        directions = ["maximize" if mode == "max" else "minimize" for _, mode in objectives]
        have = [d.name.lower() for d in summary.directions]
        if have != directions or (theirs and [list(o) for o in theirs] != wanted):
            raise UserError(
                f"study {name!r} in the study storage optimises {theirs or have}, this search {wanted}; "
                "pick another --name"
            )


def describe(study, attrs: Mapping[str, Any]) -> None:
    """Record what the study is (space, trainable, objectives, constraint) on it."""
    for key, value in attrs.items():
        study.set_user_attr(key, value)


def reconcile(
    storage,
    name: str,
    rows: Iterable[Mapping[str, Any]],
    objectives: Sequence[tuple[str, str]],
    interrupted: str | None = None,
) -> dict[str, int]:
    """Make study ``name`` agree with the search's trial rows (see the module docstring):
    per Ray Tune trial one study trial (a finished one if there is one, else the last asked),
    told the state its row's outcome implies if it is still RUNNING; every other RUNNING trial is
    an orphan and marked FAIL. The trial of an ``interrupted`` row stays RUNNING for a resume,
    unless ``interrupted`` names the state to tell it (``FAIL`` when the search starts over).
    Returns how many trials were marked orphaned and told."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=storage)
    by_row = {r["trial_id"]: r for r in rows}
    groups: dict[str, list] = {}
    for trial in study.get_trials(deepcopy=False):
        groups.setdefault(trial.user_attrs.get(RAY_TRIAL_ID) or "", []).append(trial)
    orphaned = told = 0
    for ray_id, trials in groups.items():
        row = by_row.get(ray_id) if ray_id else None
        finished = [t for t in trials if t.state != TrialState.RUNNING]
        keeper = (finished or trials)[-1] if row is not None else None
        for trial in trials:
            if trial.state != TrialState.RUNNING:
                continue
            if trial is keeper:
                state = OUTCOME_STATE.get(row.get("outcome"))
                if row.get("outcome") == "interrupted":
                    state = interrupted  # None: a resume will tell it; FAIL: abandoned
                if state is None:
                    continue  # still running or interrupted: a resume will tell it
                values = [row.get(f"last/{m}") for m, _ in objectives]
                if state == "COMPLETE" and any(v is None for v in values):
                    state = "FAIL"
                study.tell(trial.number, values if state == "COMPLETE" else None, state=TrialState[state])
                told += 1
                continue
            set_trial_user_attr(study, trial, "orphaned", True)
            study.tell(trial.number, state=TrialState.FAIL)
            orphaned += 1
    return {"orphaned": orphaned, "told": told}


def study_trials(storage, name: str) -> list[dict[str, Any]]:
    """The study's trials as plain rows (number, state, Ray Tune id, values, params)."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    return [
        {
            "number": t.number,
            "state": t.state.name,
            RAY_TRIAL_ID: t.user_attrs.get(RAY_TRIAL_ID),
            "values": t.values,
            "intermediate": dict(t.intermediate_values),
            "params": dict(t.params),
            "orphaned": bool(t.user_attrs.get("orphaned")),
        }
        for t in study.get_trials(deepcopy=False)
    ]
