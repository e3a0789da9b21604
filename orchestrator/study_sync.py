"""The study of an experiment on remote storage follows the experiment.

SQLite cannot live on S3, so a search whose experiment is remote keeps its default study in a
SQLite file on the driver (``orchestrator.study.default_study_url``). The driver copies it to
``<experiment>/study.db`` whenever it writes its Parquet parts (a consistent copy through
SQLite's backup API), so the copy is as recent as the results a killed driver left. A driver on
another machine (``resume``, ``dashboard``) that lacks the local file fetches that copy first.
A study given with ``--study-storage`` stays where it is.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.storage import Location, is_uri
from orchestrator.study import STUDY_FILE, default_study_url, saved_url_usable


def local_file(study_url: str, experiment: Location, name: str) -> Path | None:
    """The driver-local SQLite file of a remote experiment's default study, else None."""
    if not is_uri(experiment.uri) or study_url != default_study_url(experiment, name):
        return None
    return Path(study_url.removeprefix("sqlite:///"))


def push(local: Path, experiment: Location) -> None:
    """Copy the study file to ``<experiment>/study.db`` (a consistent snapshot)."""
    if not local.exists():
        return
    with tempfile.TemporaryDirectory(prefix="orchestrator-study-") as folder:
        snapshot = Path(folder) / STUDY_FILE
        with sqlite3.connect(local) as source, sqlite3.connect(snapshot) as target:
            source.backup(target)
        experiment.child(STUDY_FILE).write_bytes(snapshot.read_bytes())


def needs_copy(study_url: str, experiment: Location, name: str) -> bool:
    return local_file(study_url, experiment, name) is not None


def push_default(experiment: Location, name: str) -> None:
    """Copy the default study of remote ``experiment`` from where this driver keeps it."""
    local = local_file(default_study_url(experiment, name), experiment, name)
    if local is not None:
        push(local, experiment)


def fetch_missing(study_url: str, experiment: Location, name: str) -> bool:
    """Fetch ``<experiment>/study.db`` into the driver-local file when that file is missing
    (a resume or dashboard on another machine); True when it did."""
    local = local_file(study_url, experiment, name)
    remote = experiment.child(STUDY_FILE)
    if local is None or local.exists() or not remote.exists():
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_suffix(".part")
    partial.write_bytes(remote.read_bytes())
    partial.replace(local)
    return True


def study_url_of(record: dict[str, Any], override: str | None = None) -> str:
    """The study storage URL of a saved search: ``override`` (the user's ``--study-storage``,
    needed when the saved URL had a password, which is never written down), else the URL its
    search was given, else the default beside the experiment where it is now (it may have been
    moved); "" for an experiment from before studies were kept in a database."""
    url = override or record.get("study_storage") or ""
    if not url:
        if not record.get("study_storage_resolved"):
            return ""
        experiment = Location.parse(record["experiment_uri"])
        url = default_study_url(experiment, record["name"])
        fetch_missing(url, experiment, record["name"])  # a driver on another machine
    return saved_url_usable(url)
