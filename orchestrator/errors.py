"""User-facing errors: one clear line and exit code 2, before any work starts."""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """Bad input from the user (unknown name, bad range, unreachable address, ...)."""

    exit_code = 2
