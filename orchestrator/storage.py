"""Experiment storage: a local folder or any URI pyarrow's filesystems understand (``s3://``).

Ray Tune writes its experiment state there; this module writes the project's own files beside
it (settings, Parquet tables, the wgan_gp reference classifier) and reads them back without
Ray.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from orchestrator.errors import UserError

DEFAULT_STORAGE_ENV = "ORCHESTRATOR_STORAGE"
SETTINGS_FILE = "orchestrator.json"


def default_storage() -> str:
    """``$ORCHESTRATOR_STORAGE``, else Ray's default ``~/ray_results``."""
    return os.environ.get(DEFAULT_STORAGE_ENV) or str(Path("~/ray_results").expanduser())


def is_uri(location: str) -> bool:
    return "://" in location


def normalize(location: str | os.PathLike) -> str:
    """Absolute local paths (workers run elsewhere); URIs unchanged."""
    location = str(location)
    if is_uri(location):
        return location.rstrip("/")
    return str(Path(location).expanduser().resolve())


@dataclass(frozen=True)
class Location:
    """A folder on some filesystem: ``fs`` and the path inside it."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def parse(cls, location: str | os.PathLike) -> Location:
        uri = normalize(location)
        if is_uri(uri):
            try:
                fs, path = pafs.FileSystem.from_uri(uri)
            except Exception as exc:  # pyarrow raises ArrowInvalid / OSError
                raise UserError(f"storage {uri!r} is not usable: {exc}".splitlines()[0]) from None
            return cls(fs, path, uri)
        return cls(pafs.LocalFileSystem(), uri, uri)

    def child(self, *parts: str) -> Location:
        path = "/".join([self.path.rstrip("/"), *parts])
        uri = "/".join([self.uri.rstrip("/"), *parts])
        return Location(self.fs, path, uri)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def write_bytes(self, data: bytes) -> None:
        """Write atomically on local disks (temp file + rename); object stores PUT whole."""
        parent = self.path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            os.replace(tmp, self.path)
        else:
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)

    def read_json(self) -> Any:
        return json.loads(self.read_bytes())

    def write_json(self, value: Any) -> None:
        self.write_bytes(json.dumps(value, indent=2, sort_keys=True, default=str).encode())

    def listdir(self) -> list[str]:
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))


def check_writable(location: str) -> Location:
    """Fail with one line if ``location`` cannot be created and written."""
    loc = Location.parse(location)
    probe = loc.child(f".orchestrator-write-test-{uuid.uuid4().hex[:8]}")
    try:
        loc.fs.create_dir(loc.path, recursive=True)
        with loc.fs.open_output_stream(probe.path) as f:
            f.write(b"ok")
        loc.fs.delete_file(probe.path)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"storage {loc.uri} is not writable: {reason}") from None
    return loc


def experiment_location(storage: str, name: str) -> Location:
    return Location.parse(storage).child(name)
