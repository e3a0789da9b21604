"""User-facing errors: one clear line and an exit code.

- :class:`UserError`: bad input, exit code 2, before any work starts.
- :class:`SearchFailed`: a search could not go on (a file of the experiment could not be
  written, Ray Tune's state could not be restored), exit code 1; what was finished is kept.
- :class:`StorageWriteError`: a file could not be written, exit code 1.
- :class:`SearchInterrupted`: the user stopped a search (Ctrl-C, SIGTERM), exit code 130; the
  message says how to continue it.
"""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """Bad input from the user (unknown name, bad range, unreachable address, ...)."""

    exit_code = 2


class SearchFailed(click.ClickException):
    """A running search had to stop; nothing that was finished is lost."""

    exit_code = 1


class StorageWriteError(OSError):
    """A file of the experiment could not be written (disk full, permission lost, ...); the
    CLI prints it as one line and exits with code 1."""

    def __init__(self, path: str, cause: BaseException):
        reason = getattr(cause, "strerror", None) or (str(cause).splitlines() or [type(cause).__name__])[0]
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.cause = path, cause


class SearchInterrupted(click.ClickException):
    """A search stopped by the user (printed without the ``Error:`` prefix)."""

    exit_code = 130
