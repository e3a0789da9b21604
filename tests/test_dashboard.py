"""The dashboard's guard in front of the real optuna-dashboard app, served over real HTTP on
loopback: read-only by default, writes only with --allow-writes and behind a token."""

import json
import threading
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import optuna_dashboard
import pytest

from orchestrator.dashboard import COOKIE, Guard, access, is_loopback


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def study_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return optuna.storages.RDBStorage(url)


def _serve(storage, **guard):
    server = make_server("127.0.0.1", 0, Guard(optuna_dashboard.wsgi(storage), **guard), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _call(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


WRITES = [
    ("DELETE", "/api/studies/1", None),
    ("POST", "/api/studies", {"study_name": "new", "directions": ["minimize"]}),
    ("POST", "/api/studies/1/rename", {"study_name": "renamed"}),
    ("PUT", "/api/studies/1/note", {"version": 0, "body": "x"}),
    ("POST", "/api/trials/1/user-attrs", {"user_attrs": {"a": 1}}),
]


@pytest.mark.parametrize("method,path,body", WRITES)
def test_a_read_only_dashboard_refuses_every_write_and_the_study_stays(study_storage, method, path, body):
    server, base = _serve(study_storage)
    try:
        status, text, headers = _call(base + path, method, body)
        assert status == 405 and "read-only" in json.loads(text)["reason"]
        assert headers["Allow"] == "GET, HEAD, OPTIONS"
        status, text, _ = _call(base + "/api/studies")
        assert status == 200
        (summary,) = json.loads(text)["study_summaries"]
        assert summary["study_name"] == "s"
    finally:
        server.shutdown()
    study = optuna.load_study(study_name="s", storage=study_storage)
    assert len(study.trials) == 2 and study.trials[0].user_attrs == {}


def test_writes_need_the_token_which_the_first_url_turns_into_a_cookie(study_storage):
    server, base = _serve(study_storage, writes=True, token="t0k")
    try:
        assert _call(base + "/api/studies")[0] == 403
        assert _call(base + "/api/studies?token=wrong")[0] == 403
        assert _call(base + "/api/studies/1", "DELETE")[0] == 403
        status, _, headers = _call(base + "/api/studies?token=t0k")
        assert status == 200
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=t0k") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert _call(base + "/api/studies", headers={"Cookie": f"{COOKIE}=t0k"})[0] == 200
        assert _call(base + "/api/studies", headers={"Authorization": "token t0k"})[0] == 200
        assert _call(base + "/api/studies/1", "DELETE", headers={"Cookie": f"{COOKIE}=t0k"})[0] == 204
    finally:
        server.shutdown()
    assert optuna.get_all_study_names(storage=study_storage) == []


def test_access_warns_beyond_loopback_and_writes_always_get_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("no-such-host.invalid")
    assert access("127.0.0.1", writes=False, token=None) == (None, None)
    token, warning = access("127.0.0.1", writes=True, token=None)
    assert token and len(token) >= 24 and warning is None
    token, warning = access("0.0.0.0", writes=False, token=None)
    assert token is None and warning.startswith("warning: --host 0.0.0.0") and "read-only" in warning
    assert "\n" not in warning
    token, warning = access("0.0.0.0", writes=True, token="given")
    assert token == "given" and "behind its token" in warning
