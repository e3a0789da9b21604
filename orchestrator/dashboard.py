"""``orchestrator dashboard``: optuna-dashboard on a search's study, safe to open.

optuna-dashboard's API edits and deletes (a ``DELETE /api/studies/1`` removes the study that
``resume`` and ``--warm-start`` read) and asks nobody who is calling. :class:`Guard` wraps its
WSGI app:

- read-only by default: only ``GET``, ``HEAD`` and ``OPTIONS`` pass, every other method is
  answered ``405`` before optuna-dashboard sees it (notes, tells, renames, deletes, artifact
  uploads and schema migrations are all ``POST``, ``PUT`` or ``DELETE``);
- with a token (as Jupyter does), each request carries it: ``?token=...`` in the first URL, after
  which an ``HttpOnly``, ``SameSite=Strict`` cookie carries it, or an ``Authorization: token ...``
  header; any other request is answered ``403``. ``--allow-writes`` always asks for one.

:func:`serve` runs it on wsgiref (what optuna-dashboard's own ``run_server`` uses).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

#: Methods a read-only dashboard lets through.
READ_METHODS = ("GET", "HEAD", "OPTIONS")
COOKIE = "orchestrator_dashboard_token"


class Guard:
    """WSGI middleware: read-only unless ``writes``; every request needs ``token`` when set."""

    def __init__(self, app: Callable, *, writes: bool = False, token: str | None = None):
        self.app, self.writes, self.token = app, writes, token

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        extra: list[tuple[str, str]] = []
        if self.token:
            given = _query_token(environ)
            if given is not None and _same(given, self.token):
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                extra.append(("Set-Cookie", cookie))
            elif not any(_same(t, self.token) for t in _carried_tokens(environ)):
                return _refuse(
                    start_response,
                    "403 Forbidden",
                    "this dashboard asks for its token: open the URL it printed",
                )
        if environ.get("REQUEST_METHOD", "GET").upper() not in READ_METHODS and not self.writes:
            reason = "this dashboard is read-only: start it with --allow-writes to change the study"
            return _refuse(
                start_response, "405 Method Not Allowed", reason, [("Allow", ", ".join(READ_METHODS))]
            )

        def respond(status, headers, exc_info=None):
            return start_response(status, [*headers, *extra], exc_info)

        return self.app(environ, respond)


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _query_token(environ: dict[str, Any]) -> str | None:
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None


def _carried_tokens(environ: dict[str, Any]) -> list[str]:
    found = []
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header.lower().startswith("token "):
        found.append(header[len("token ") :].strip())
    cookie = SimpleCookie()
    try:
        cookie.load(environ.get("HTTP_COOKIE", ""))
    except Exception:  # a malformed cookie header carries no token
        return found
    if COOKIE in cookie:
        found.append(cookie[COOKIE].value)
    return found


def _refuse(start_response: Callable, status: str, reason: str, headers: list | None = None) -> list[bytes]:
    body = json.dumps({"reason": reason}).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(headers or [])]
    )
    return [body]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def access(host: str, writes: bool, token: str | None) -> tuple[str | None, str | None]:
    """The token the dashboard asks for (``None``: none) and a one-line warning (or ``None``).

    Writes always need a token (a new random one unless given); a bind beyond loopback is
    warned about, read-only or not."""
    if writes and not token:
        token = secrets.token_urlsafe(24)
    if is_loopback(host):
        return token, None
    mode = "read-write, behind its token" if writes else "read-only" + (", behind its token" if token else "")
    hint = "" if token else "; --token asks every client for one"
    return token, (
        f"warning: --host {host} serves the study to every machine that reaches this port ({mode}{hint})"
    )


def serve(storage: Any, host: str, port: int, *, writes: bool = False, token: str | None = None) -> None:
    """Serve optuna-dashboard on ``storage`` behind :class:`Guard` until Ctrl-C."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # no line per request in the user's terminal
            pass

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    app = Guard(optuna_dashboard.wsgi(storage), writes=writes, token=token)
    server = make_server(host, port, app, server_class=Server, handler_class=Quiet)
    with server, contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
