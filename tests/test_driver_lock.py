"""One driver per experiment: the lease, its stale cases, and the commands refused while it is held."""

import json
import os
import subprocess
import time

import pytest
from click.testing import CliRunner

from orchestrator import driver_lock
from orchestrator.cli import cli
from orchestrator.driver_lock import LOCK_FILE, ExperimentBusy, hold, holder
from orchestrator.storage import Location


@pytest.fixture()
def live_pid():
    """A process of this host that runs for the whole test (another driver, as far as the lease knows)."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _lease(experiment, **fields):
    now = time.time()
    lease = {"host": driver_lock._this_host(), "pid": 1, "token": "other", "command": "orchestrator search x"}
    lease.update({"started": now, "renewed": now, **fields})
    os.makedirs(experiment, exist_ok=True)
    (experiment / LOCK_FILE).write_text(json.dumps(lease))
    return lease


def test_the_lease_is_held_while_the_block_runs_and_released_after(tmp_path):
    loc = Location.parse(tmp_path / "exp")
    with hold(loc, "orchestrator search exp", echo=print):
        lease = holder(loc)
        assert lease["pid"] == os.getpid() and lease["command"] == "orchestrator search exp"
        with hold(loc, "orchestrator resume exp --fresh", echo=print):  # re-entrant in one process
            assert holder(loc)["token"] == lease["token"]
        assert holder(loc) is not None, "the inner block does not release the outer one's lease"
    assert holder(loc) is None and not (tmp_path / "exp" / LOCK_FILE).exists()


def test_a_live_driver_of_this_host_holds_the_experiment(tmp_path, live_pid):
    _lease(tmp_path / "exp", pid=live_pid, renewed=0)  # renewal does not matter on this host
    loc = Location.parse(tmp_path / "exp")
    busy = pytest.raises(ExperimentBusy, match=rf"orchestrator resume exp: .*pid {live_pid}")
    with busy, hold(loc, "orchestrator resume exp", echo=print):
        pytest.fail("entered a held experiment")
    assert json.loads((tmp_path / "exp" / LOCK_FILE).read_text())["token"] == "other", "left as it was"


def test_a_dead_driver_of_this_host_is_taken_over_with_a_notice(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    _lease(tmp_path / "exp", pid=dead.pid)
    said = []
    with hold(Location.parse(tmp_path / "exp"), "orchestrator resume exp", echo=said.append):
        assert holder(Location.parse(tmp_path / "exp"))["pid"] == os.getpid()
    assert len(said) == 1 and f"its process {dead.pid} no longer runs" in said[0]


def test_another_hosts_lease_holds_until_it_expires(tmp_path):
    loc = Location.parse(tmp_path / "exp")
    _lease(tmp_path / "exp", host="gpu-node-7", pid=os.getpid())
    with pytest.raises(ExperimentBusy, match="gpu-node-7"), hold(loc, "orchestrator resume exp", echo=print):
        pass
    _lease(tmp_path / "exp", host="gpu-node-7", renewed=time.time() - driver_lock.EXPIRE_S - 5)
    said = []
    with hold(loc, "orchestrator resume exp", echo=said.append):
        pass
    assert "not renewed for" in said[0]


def test_the_holder_renews_its_lease_and_leaves_a_new_holder_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(driver_lock, "RENEW_S", 0.05)
    loc = Location.parse(tmp_path / "exp")
    path = tmp_path / "exp" / LOCK_FILE
    with hold(loc, "orchestrator search exp", echo=print):
        first = json.loads(path.read_text())["renewed"]
        time.sleep(0.3)
        assert json.loads(path.read_text())["renewed"] > first
        path.write_text(json.dumps({**json.loads(path.read_text()), "token": "taken-over"}))
        time.sleep(0.2)
    assert json.loads(path.read_text())["token"] == "taken-over", "a taken-over lease is not deleted"


def test_an_unreadable_lease_is_replaced(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / LOCK_FILE).write_text("{")
    with hold(Location.parse(tmp_path / "exp"), "orchestrator search exp", echo=print):
        assert holder(Location.parse(tmp_path / "exp"))["pid"] == os.getpid()


def _saved_experiment(tmp_path, name="held"):
    """An experiment's saved record (no Ray): what `resume` and `resume --fresh` read first."""
    from orchestrator.plan import plan_search
    from orchestrator.settings import SearchSettings, save_record
    from tests.conftest import tiny_trial_config

    settings = SearchSettings(
        space="classic",
        name=name,
        storage=str(tmp_path),
        config=tiny_trial_config("classic"),
        wandb_mode="disabled",
    )
    plan = plan_search(settings)
    save_record(plan.experiment, plan.record())
    (tmp_path / name / "tuner.pkl").write_bytes(b"")  # Ray Tune's state, as far as can_restore looks
    return tmp_path / name


@pytest.mark.parametrize(
    "args",
    [
        ["resume", "held"],
        ["resume", "held", "--fresh"],
        ["search", "--space", "classic", "--name", "held", "-s", "dataset=synthetic"],
    ],
    ids=["resume", "resume-fresh", "search"],
)
def test_a_second_driver_is_one_line_exit_2_and_touches_nothing(tmp_path, live_pid, args):
    experiment = _saved_experiment(tmp_path)
    _lease(experiment, pid=live_pid)
    before = {p.name: p.read_bytes() for p in experiment.iterdir()}
    result = CliRunner().invoke(cli, [*args, "--storage", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "in use by orchestrator search x" in lines[0] and f"pid {live_pid}" in lines[0]
    assert {p.name: p.read_bytes() for p in experiment.iterdir()} == before


def test_readers_say_that_the_search_is_running(tmp_path, live_pid):
    experiment = _saved_experiment(tmp_path)
    _lease(experiment, pid=live_pid)
    result = CliRunner().invoke(cli, ["results", "held", "--storage", str(tmp_path)])
    assert "the search is running" in result.stderr and f"pid {live_pid}" in result.stderr


def test_a_lease_is_created_whole_and_without_hard_links_too(tmp_path, monkeypatch):
    """The lease file appears with its content (written aside, hard-linked: a claimant never
    reads it empty); on a filesystem without hard links an exclusive create does it."""
    exp = Location.parse(tmp_path / "exp")
    with hold(exp, "orchestrator search exp", echo=lambda line: None):
        assert json.loads((tmp_path / "exp" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == [], "no temporary file left"

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(driver_lock.os, "link", no_links)
    with hold(exp, "orchestrator search exp", echo=lambda line: None):
        assert json.loads((tmp_path / "exp" / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert not driver_lock._claim_local(exp.child(LOCK_FILE), b"{}"), "held: a second claim fails"
    assert not (tmp_path / "exp" / LOCK_FILE).exists()
