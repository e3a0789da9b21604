"""Experiment storage: a local folder or any URI pyarrow's filesystems understand (``s3://``).

Ray Tune writes its experiment state there; this module writes the project's own files beside
it (settings, Parquet tables, the wgan_gp reference classifier) and reads them back without
Ray. Writes cannot half-happen: a local file is written to a temporary name, flushed to disk
and renamed over the old one (an object store replaces a whole object on PUT); a failed write
removes its temporary file and raises :class:`StorageWriteError` naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from orchestrator.compat.libs import s3_with_attempts
from orchestrator.errors import StorageWriteError, UserError

__all__ = ["Location", "StorageWriteError", "check_writable"]

DEFAULT_STORAGE_ENV = "ORCHESTRATOR_STORAGE"
TMP_SUFFIX = ".tmp"


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
        """Write atomically (see the module docstring); :class:`StorageWriteError` on failure,
        with the previous file, if any, left as it was."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = f"{self.path}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise StorageWriteError(self.path, exc) from exc
            return
        try:
            self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)
        except OSError as exc:
            raise StorageWriteError(self.uri, exc) from exc

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path)

    def files(self, prefix: str = "", suffix: str = "") -> list[Location]:
        """The files directly in this folder whose names start with ``prefix`` and end with
        ``suffix``, sorted by name."""
        return self._entries(pafs.FileType.File, prefix, suffix)

    def folders(self, prefix: str = "") -> list[Location]:
        """The folders directly in this folder whose names start with ``prefix``, sorted by name."""
        return self._entries(pafs.FileType.Directory, prefix, "")

    def _entries(self, kind: pafs.FileType, prefix: str, suffix: str) -> list[Location]:
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        names = sorted(
            info.base_name
            for info in self.fs.get_file_info(selector)
            if info.type == kind and info.base_name.startswith(prefix) and info.base_name.endswith(suffix)
        )
        return [self.child(name) for name in names]

    def remove_if_empty(self) -> None:
        """Remove this folder if nothing is in it (object stores have no empty folders)."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            with contextlib.suppress(OSError):
                os.rmdir(self.path)

    def remove_leftovers(self) -> int:
        """Delete temporary files an interrupted write left in this folder; how many."""
        leftovers = self.files(suffix=TMP_SUFFIX)
        for loc in leftovers:
            loc.delete()
        return len(leftovers)

    def read_json(self) -> Any:
        return json.loads(self.read_bytes())

    def write_json(self, value: Any) -> None:
        self.write_bytes(json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def check_output(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """A local file (``folder``: a folder) a command is about to write: its folder is created
    and written to once, else one line (exit 2) before any work."""
    target = Path(path)
    where = target if folder else target.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".orchestrator-write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot write there ({exc.strerror or exc})") from None
    return target


def check_writable(location: str) -> Location:
    """Fail with one line if ``location`` cannot be created and written (on S3, in about a second
    where the endpoint does not answer: two attempts per request, not pyarrow's back-off)."""
    loc = Location.parse(location)
    probe = loc.child(f".orchestrator-write-test-{uuid.uuid4().hex[:8]}")
    fs = loc.fs
    try:
        if isinstance(fs, pafs.S3FileSystem):
            fs = s3_with_attempts(fs, 2)
        fs.create_dir(loc.path, recursive=True)
        with fs.open_output_stream(probe.path) as f:
            f.write(b"ok")
        fs.delete_file(probe.path)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if loc.uri.startswith("s3://") and not s3_credentials_visible():
            reason += f"; {NO_S3_CREDENTIALS}"
        raise UserError(f"storage {loc.uri} is not writable: {reason}") from None
    return loc


NO_S3_CREDENTIALS = (
    "no S3 credentials were found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
    "~/.aws/credentials; docs/scaling-out.md)"
)


def s3_credentials_visible(environ: dict[str, str] | None = None) -> bool:
    """Whether a source of S3 credentials that the AWS SDK reads is visible from here: the
    environment, a profile or credentials file, web identity or container credentials. An
    instance role (EC2 metadata) is not visible without a request, so this only words an error."""
    env = os.environ if environ is None else environ
    keys = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")  # fmt: skip
    if any(env.get(key) for key in keys):
        return True
    home = Path(env.get("HOME") or Path.home())
    files = (env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials",
             env.get("AWS_CONFIG_FILE") or home / ".aws" / "config")  # fmt: skip
    return any(Path(f).is_file() for f in files)
