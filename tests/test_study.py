"""The Optuna study in a real database: storage, bad input, warm start, the dashboard."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest

from orchestrator.errors import UserError
from orchestrator.plan import plan_search
from orchestrator.settings import SearchSettings
from orchestrator.study import study_trials
from tests.conftest import search


def _settings(tmp_path, **kw):
    base = dict(space="classic", storage=str(tmp_path), name="x", config={"dataset": "synthetic"})
    base.update(kw)
    return SearchSettings(**base)


@pytest.mark.parametrize(
    "url",
    ["notaurl", "sqlite:////proc/no/such/dir/study.db", "postgresql://user:s3cret@127.0.0.1:1/db"],
)
def test_a_bad_study_storage_is_one_line_before_anything_starts(tmp_path, url):
    with pytest.raises(UserError) as info:
        plan_search(_settings(tmp_path, study_storage=url), check_dataset=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith("--study-storage")
    assert "s3cret" not in message, "no password in messages"
    assert not (tmp_path / "x").exists(), "nothing written"


def test_a_study_of_another_space_under_the_same_name_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="x", storage=url, direction="maximize").set_user_attr("space", "wgan_gp")
    with pytest.raises(UserError, match="belongs to space 'wgan_gp'"):
        plan_search(_settings(tmp_path, study_storage=url), check_dataset=False)
    plan = plan_search(_settings(tmp_path, study_storage=url, space="wgan_gp"), check_dataset=False)
    assert plan.study_url == url, "the URL goes to Optuna unchanged"


@pytest.mark.parametrize("directions", [["minimize"], ["maximize", "maximize"]])
def test_a_study_with_other_directions_under_the_same_name_is_refused(tmp_path, directions):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="x", storage=url, directions=directions).set_user_attr("space", "classic")
    with pytest.raises(UserError, match=r"study 'x' in the study storage optimises .* pick another --name"):
        plan_search(_settings(tmp_path, study_storage=url), check_dataset=False)
    assert not (tmp_path / "x").exists(), "nothing written"


def test_a_study_of_other_objectives_under_the_same_name_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(study_name="x", storage=url, direction="maximize")
    study.set_user_attr("space", "classic")
    study.set_user_attr("objectives", [["val/acc", "max"]])
    with pytest.raises(
        UserError, match=r"optimises \[\['val/acc', 'max'\]\], this search \[\['val/apgd_acc'"
    ):
        plan_search(_settings(tmp_path, study_storage=url), check_dataset=False)


def test_the_saved_settings_hold_no_study_password(tmp_path, monkeypatch):
    import orchestrator.plan as plan_module

    monkeypatch.setattr(plan_module, "open_storage", lambda url, **kw: None)  # no server to ask
    monkeypatch.setattr(plan_module, "check_study", lambda *a, **k: None)
    url = "postgresql+psycopg2://user:s3cret@127.0.0.1:1/db"
    record = plan_search(_settings(tmp_path, study_storage=url), check_dataset=False).record()
    assert "s3cret" not in json.dumps(record)
    assert record["study_storage"] == "postgresql+psycopg2://user:***@127.0.0.1:1/db"


def test_default_study_is_a_sqlite_file_of_the_experiment(tmp_path):
    plan = plan_search(_settings(tmp_path), check_dataset=False)
    assert plan.study_url == f"sqlite:///{tmp_path / 'x' / 'study.db'}"
    assert plan.record()["study_storage_resolved"] == plan.study_url


def _check_study_matches_trials(experiment, name):
    return _check_study_matches_trials_at(experiment, f"sqlite:///{experiment / 'study.db'}", name)


def _check_study_matches_trials_at(experiment, url, name):
    trials = {t["trial_id"]: t for t in pq.read_table(experiment / "trials.parquet").to_pylist()}
    study = study_trials(url, name)
    assert not [t for t in study if t["state"] == "RUNNING"]
    own = [t for t in study if t["ray_trial_id"]]
    assert sorted(t["ray_trial_id"] for t in own) == sorted(trials), "each Tune trial once"
    expected = {"completed": "COMPLETE", "diverged": "COMPLETE", "early_stopped": "PRUNED", "error": "FAIL"}
    for t in own:
        assert t["state"] == expected[trials[t["ray_trial_id"]]["outcome"]]
    return study, trials


@pytest.mark.slow
def test_each_space_keeps_its_study_in_sqlite(space_runs):
    root, runs = space_runs
    for space, (plan, _) in runs.items():
        _study, _trials = _check_study_matches_trials(root / plan.settings.name, plan.settings.name)
        attrs = optuna.load_study(study_name=plan.settings.name, storage=plan.study_url).user_attrs
        assert attrs["space"] == space and attrs["trainable"] == plan.trainable.name
        assert attrs["objectives"] == [list(o) for o in plan.objectives]


@pytest.mark.slow
def test_warm_start_mismatches_are_one_line(space_runs, tmp_path):
    root, _ = space_runs
    cases = [
        (dict(space="adaptive_ratio", warm_start="e2e-classic"), "space 'classic', not 'adaptive_ratio'"),
        (dict(warm_start="nope"), "--warm-start nope"),
        (dict(warm_start="e2e-classic", ranges={"lr": (1e-4, 1.1e-4)}), "outside range"),
        (dict(warm_start="e2e-classic", objective="pareto", searcher="nsga2"), "it optimised"),
    ]
    for kw, needle in cases:
        settings = SearchSettings(space=kw.pop("space", "classic"), storage=str(root), name="w", **kw)
        with pytest.raises(UserError) as info:
            plan_search(settings, check_dataset=False)
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert not (root / "w").exists()


@pytest.mark.slow
def test_warm_start_seeds_the_study_and_runs_the_best_first(space_runs, tmp_path):
    root, _runs = space_runs
    old = pq.read_table(root / "e2e-classic" / "trials.parquet").to_pylist()
    finished = [t for t in old if t["outcome"] in ("completed", "early_stopped", "diverged")]
    plan, _ = search(
        root,
        "classic",
        "warm",
        num_samples=2,
        max_iterations=2,
        scheduler="fifo",
        warm_start="e2e-classic",
        warm_start_top=1,
        wandb_mode="disabled",
    )
    assert len(plan.warm_trials) == len(finished) and len(plan.warm_points) == 1
    study = optuna.load_study(study_name="warm", storage=plan.study_url)
    seeded = [t for t in study.trials if "warm_start_from" in t.user_attrs]
    assert sorted(t.user_attrs["warm_start_from"] for t in seeded) == sorted(t["trial_id"] for t in finished)
    best = max(
        (t for t in old if t["outcome"] == "completed"),
        key=lambda t: t["last/val/apgd_acc"],
    )
    new = [t for t in study.trials if "warm_start_from" not in t.user_attrs]
    first = min(new, key=lambda t: t.number)
    for name, value in first.params.items():
        assert value == pytest.approx(best[f"config/{name}"]), "the best earlier configuration runs first"
    _check_study_matches_trials(root / "warm", "warm")
    assert study.user_attrs["warm_start"] == "e2e-classic"
    # No more points enqueued than the search has trials (the rest would wait in the study).
    capped = plan_search(
        SearchSettings(
            space="classic",
            name="capped",
            storage=str(root),
            num_samples=1,
            warm_start="e2e-classic",
            warm_start_top=1000,
            config={"dataset": "synthetic"},
            wandb_mode="disabled",
        )
    )
    assert len(capped.warm_points) >= 2 and len(capped.first_points) == 1
    # The sampler does not replay the earlier search's random draws (same --seed).
    assert capped.sampler_seed == capped.settings.seed + len(capped.warm_trials) != capped.settings.seed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_for_dashboard(proc, port: int) -> list[dict]:
    """The study summaries of the dashboard on ``port`` once it answers (a minute at most)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        try:
            return _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the dashboard did not answer within a minute")


@pytest.mark.slow
def test_dashboard_serves_the_study_of_a_moved_experiment(space_runs, tmp_path):
    """The experiment was moved (its record names a folder that is gone): the dashboard serves
    its study from where it is now and creates nothing where it was."""
    shared, _runs = space_runs
    root, gone = tmp_path / "moved", tmp_path / "gone"
    shutil.copytree(shared / "e2e-classic", root / "e2e-classic")
    record_file = root / "e2e-classic" / "orchestrator.json"
    record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "storage": str(gone)}))
    port = _free_port()
    args = [sys.executable, "-m", "orchestrator.cli", "dashboard", "e2e-classic", "--storage", str(root)]
    proc = subprocess.Popen(
        [*args, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ)
    )
    try:
        studies = _wait_for_dashboard(proc, port)
        (study,) = [s for s in studies if s["study_name"] == "e2e-classic"]
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0")
        rows = pq.read_table(root / "e2e-classic" / "trials.parquet").to_pylist()
        ids = {a["value"] for t in detail["trials"] for a in t["user_attrs"] if a["key"] == "ray_trial_id"}
        assert ids == {r["trial_id"] for r in rows}
        assert any(t["intermediate_values"] for t in detail["trials"]), "per-iteration values"
    finally:
        proc.terminate()
        proc.wait(10)
    assert not gone.exists()


def test_dashboard_of_a_missing_experiment_is_one_line(tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    result = CliRunner().invoke(cli, ["dashboard", "nope", "--storage", str(tmp_path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_a_pickled_study_storage_holds_no_password(monkeypatch):
    """Ray Tune pickles the searcher with its study storage (tuner.pkl, searcher state, session
    folder): the pickle has *** where the password was, and unpickling puts it back from the
    environment that opening the URL set."""
    import pickle

    from orchestrator import study

    cls = study._storage_class()
    storage = cls.__new__(cls)
    url = "postgresql+psycopg2://user:s3cret@127.0.0.1:1/db"
    storage.__dict__.update(
        url=url, engine_kwargs={}, scoped_session=None, engine=None, _version_manager=None
    )
    data = pickle.dumps(storage)
    assert b"s3cret" not in data and b"user:***@127.0.0.1" in data
    restored = {}
    monkeypatch.setattr(cls.__mro__[1], "__setstate__", lambda self, state: restored.update(state))
    monkeypatch.setenv(study.PASSWORD_ENV, "s3cret")
    pickle.loads(data)
    assert restored["url"] == url


def test_a_saved_password_comes_from_the_environment_or_is_asked_for(monkeypatch, tmp_path):
    from orchestrator.study import PASSWORD_ENV, saved_url_usable

    saved = "postgresql+psycopg2://user:***@db.example:5432/studies"
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(UserError, match="never saved: set ORCHESTRATOR_STUDY_PASSWORD"):
        saved_url_usable(saved)
    monkeypatch.setenv("PGPASSWORD", "x")  # libpq reads it: the URL goes without a password
    assert saved_url_usable(saved) == "postgresql+psycopg2://user@db.example:5432/studies"
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    assert saved_url_usable(saved) == "postgresql+psycopg2://user:s3cret@db.example:5432/studies"
    assert saved_url_usable("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"


def test_a_moved_experiments_paths_and_study_urls_point_where_it_is_now(monkeypatch):
    from orchestrator import relocation

    with relocation.experiment_moved(["/old/exp", "/older/exp"], "/new/exp") as moves:
        assert moves == {"/old/exp": "/new/exp", "/older/exp": "/new/exp"}
        assert relocation.here("/old/exp") == "/new/exp"
        assert relocation.here("/older/exp/deadline.json") == "/new/exp/deadline.json"
        assert relocation.here("sqlite:////old/exp/study.db") == "sqlite:////new/exp/study.db"
        assert relocation.here("journal:///old/exp/j.log") == "journal:///new/exp/j.log"
        assert relocation.here("/old/experiment") == "/old/experiment"  # another folder
        env = relocation.worker_env()
    assert relocation.here("/old/exp") == "/old/exp" and relocation.worker_env() == {}
    monkeypatch.setenv(relocation.ENV, env[relocation.ENV])  # a trial worker
    assert relocation.here("/old/exp/deadline.json") == "/new/exp/deadline.json"


def test_a_pickled_journal_study_follows_its_moved_experiment(tmp_path):
    import pickle
    import shutil

    import optuna

    from orchestrator import relocation
    from orchestrator.study import open_storage

    storage = open_storage(f"journal:///{tmp_path / 'old' / 'study.log'}", create=True)
    study = optuna.create_study(storage=storage, study_name="s")
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 1.0)
    pickled = pickle.dumps(storage)  # as Ray Tune pickles the searcher with its study
    assert len(pickled) < 300, "its path only, not an index of every line it read"
    shutil.move(tmp_path / "old", tmp_path / "new")
    with relocation.experiment_moved([str(tmp_path / "old")], str(tmp_path / "new")):
        again = optuna.load_study(study_name="s", storage=pickle.loads(pickled))
        again.tell(again.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 2.0)
    assert len(again.trials) == 2 and not (tmp_path / "old").exists(), "the old folder stays gone"


def test_a_reader_creates_no_study_database_or_folder(tmp_path):
    from orchestrator.study import open_storage

    url = f"sqlite:///{tmp_path / 'gone' / 'study.db'}"
    with pytest.raises(UserError, match="there is no"):
        open_storage(url)
    assert not (tmp_path / "gone").exists()
    open_storage(url, create=True)
    assert (tmp_path / "gone" / "study.db").exists()


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_resume_names_a_damaged_or_missing_study_database_before_ray(space_runs, tmp_path, damage):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    shared, _runs = space_runs
    shutil.copytree(shared / "e2e-wgan_gp", tmp_path / "e2e-wgan_gp")
    db = tmp_path / "e2e-wgan_gp" / "study.db"
    if damage == "garbage":
        db.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    else:
        db.unlink()
    before = {p: p.read_bytes() for p in (tmp_path / "e2e-wgan_gp").rglob("*") if p.is_file()}
    result = CliRunner().invoke(cli, ["resume", "e2e-wgan_gp", "--storage", str(tmp_path)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    if damage == "garbage":
        assert "is damaged or unreadable" in line and ".recover" in line
    else:
        assert "has no study database at" in line
    assert "orchestrator resume e2e-wgan_gp --fresh" in line
    assert {p: p.read_bytes() for p in (tmp_path / "e2e-wgan_gp").rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_search_with_its_study_in_postgresql_writes_the_password_nowhere(local_ray, postgres_url, tmp_path):
    """A real search whose study lives in a real PostgreSQL server, its URL carrying the
    password: the study holds every trial, and no file of the experiment (orchestrator.json,
    tuner.pkl, the searcher state, W&B runs) or of Ray's session folder holds the password."""
    from tests.conftest import PG_PASSWORD

    settings = dict(num_samples=2, max_iterations=1, scheduler="fifo", study_storage=postgres_url)
    search(tmp_path, "classic", "pg", **settings)
    _check_study_matches_trials_at(tmp_path / "pg", postgres_url, "pg")
    secret = PG_PASSWORD.encode()
    places = [tmp_path, Path(os.environ["RAY_TMPDIR"])]
    files = [p for place in places for p in place.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "tuner.pkl" for p in files) and any("session_" in str(p) for p in files)
    leaks = [str(p) for p in files if secret in p.read_bytes()]
    assert not leaks, leaks

    # A second search shares the server and warm-starts from the first.
    warm = dict(settings, num_samples=1, warm_start="pg", warm_start_top=1, wandb_mode="disabled")
    search(tmp_path, "classic", "pg2", **warm)
    _check_study_matches_trials_at(tmp_path / "pg2", postgres_url, "pg2")
    seeded = optuna.load_study(study_name="pg2", storage=postgres_url).trials
    assert sum("warm_start_from" in t.user_attrs for t in seeded) == 2

    # The dashboard serves both studies from the server; the password is printed nowhere.
    port = _free_port()
    args = [sys.executable, "-m", "orchestrator.cli", "dashboard", "pg2", "--storage", str(tmp_path)]
    args += ["--study-storage", postgres_url, "--port", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        studies = _wait_for_dashboard(proc, port)
        assert {"pg", "pg2"} <= {s["study_name"] for s in studies}
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert PG_PASSWORD.encode() not in output and b"pg2" in output


def test_a_wrong_postgresql_password_is_one_line_before_anything_starts(postgres_url, tmp_path):
    from tests.conftest import PG_PASSWORD

    wrong = postgres_url.replace(PG_PASSWORD, "not-the-password")
    with pytest.raises(UserError) as info:
        plan_search(_settings(tmp_path, study_storage=wrong), check_dataset=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith("--study-storage") and "password" in message
    assert "not-the-password" not in message and PG_PASSWORD not in message
    assert not (tmp_path / "x").exists(), "nothing written"


def _browser(chromium: str, chromedriver: str):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))


def _page_text(browser, url: str | None, needles: list[str], timeout: float = 60) -> str:
    """The rendered text of ``url`` (None: the page already open) once it shows every needle
    (the dashboard is a React app)."""
    from selenium.webdriver.common.by import By

    if url is not None:
        browser.get(url)
    deadline, text = time.time() + timeout, ""
    while time.time() < deadline:
        text = browser.find_element(By.TAG_NAME, "body").text
        if all(n in text for n in needles):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{url} never showed {needles}: {text[:1500]}")


@pytest.mark.slow
def test_the_dashboard_page_shows_the_study_in_a_real_browser(space_runs, tmp_path):
    """`orchestrator dashboard` opened in headless Chromium (Debian's chromium and
    chromium-driver, driven by selenium): the study, its objective and its trials appear."""
    pytest.importorskip("selenium")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    root, _runs = space_runs
    rows = pq.read_table(root / "e2e-classic" / "trials.parquet").to_pylist()
    port = _free_port()
    args = [sys.executable, "-m", "orchestrator.cli", "dashboard", "e2e-classic", "--storage", str(root)]
    proc = subprocess.Popen([*args, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    browser = None
    try:
        from selenium.webdriver.common.by import By

        (study,) = [s for s in _wait_for_dashboard(proc, port) if s["study_name"] == "e2e-classic"]
        browser = _browser(chromium, chromedriver)
        base = f"http://127.0.0.1:{port}/dashboard/studies/{study['study_id']}"
        _page_text(browser, base, ["e2e-classic", "val/apgd_acc"])
        # DASHBOARD_SCREENSHOT=docs/figures/dashboard.png makes the figure in docs/searching.md.
        shot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        # The trials page lists every trial; opening each shows its Ray trial id and parameters.
        _page_text(browser, f"{base}/trials", [f"Trial {i}" for i in range(len(rows))])
        seen = set()
        for i in range(len(rows)):
            browser.find_element(By.XPATH, f"(//*[normalize-space()='Trial {i}'])[1]").click()
            text = _page_text(browser, None, [f"Trial {i} (trial_id=", "adv_eps", "ray_trial_id"])
            seen.add(text.split("ray_trial_id", 1)[1].split()[0])
        assert seen == {r["trial_id"] for r in rows}
        # The page's own origin asks to delete the study and to create one: both refused, as
        # the dashboard is read-only unless started with --allow-writes.
        statuses = browser.execute_async_script(
            """const done = arguments[arguments.length - 1];
            const id = arguments[0];
            Promise.all([
              fetch(`/api/studies/${id}`, {method: "DELETE"}).then(r => r.status),
              fetch("/api/studies", {method: "POST", headers: {"Content-Type": "application/json"},
                body: JSON.stringify({study_name: "x", directions: ["minimize"]})}).then(r => r.status),
            ]).then(done, e => done(String(e)));""",
            study["study_id"],
        )
        assert statuses == [405, 405], statuses
        after = [s["study_name"] for s in _wait_for_dashboard(proc, port)]
        assert "e2e-classic" in after and "x" not in after
        url = f"sqlite:///{root / 'e2e-classic' / 'study.db'}"
        assert len(optuna.load_study(study_name="e2e-classic", storage=url).trials) == len(rows)
    finally:
        if browser is not None:
            browser.quit()
        proc.terminate()
        proc.wait(10)
