"""The orchestrator's rooms: readers without Ray, private internals in one module, results
written in parts whose I/O grows linearly."""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from orchestrator.callbacks import ParquetCallback
from orchestrator.results import HISTORY_FILE, PARTS_DIR, TRIALS_FILE, ResultsStore, load_results
from orchestrator.storage import SETTINGS_FILE, Location
from trainables.models import ClassicClassifier
from trainables.reporting import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = [("val/acc", "max")]
META = {
    "space": "classic",
    "trainable": "classic",
    "budget_key": "epochs",
    "unit": "epoch",
    "objectives": [list(o) for o in OBJECTIVES],
    "params": [{"name": "lr", "kind": "float", "low": 1e-4, "high": 1e-2, "log": True, "conditions": []}],
}


class FakeTrial:
    """What the Parquet callback reads of a Ray Tune trial."""

    def __init__(self, trial_id, lr, budget=3, checkpoint=None):
        self.trial_id, self.status, self.num_failures, self.error_file = trial_id, "RUNNING", 0, None
        self.config = {"lr": lr, "epochs": budget, "dataset": "synthetic"}
        self.checkpoint = checkpoint


def run_fake_search(
    experiment: Path, n_trials: int, reports: int = 3, flush_s: float = 0.0
) -> ParquetCallback:
    """Drive the Parquet callback as Ray Tune would for ``n_trials`` trials of ``reports``."""
    callback = ParquetCallback(
        str(experiment), metadata=META, budget_key="epochs", objectives=OBJECTIVES, flush_s=flush_s
    )
    callback.setup()
    trials = []
    for i in range(n_trials):
        trial = FakeTrial(f"t{i:04d}", 1e-3 * (1 + i % 7), budget=reports)
        trials.append(trial)
        for it in range(1, reports + 1):
            result = {"iteration": it, "training_iteration": it, "val/acc": 0.1 * (i % 10) + 0.01 * it}
            result["time_total_s"] = float(it)
            callback.on_trial_result(it, trials, trial, result)
        trial.status = "TERMINATED"
        callback.on_trial_complete(reports, trials, trial)
    callback.on_experiment_end(trials)
    return callback


class CountingLocation(Location):
    written = 0

    def write_bytes(self, data: bytes) -> None:
        CountingLocation.written += len(data)
        super().write_bytes(data)

    def child(self, *parts):
        loc = super().child(*parts)
        return CountingLocation(loc.fs, loc.path, loc.uri)


def _bytes_written(tmp_path, monkeypatch, n_trials: int) -> int:
    import orchestrator.results as results

    CountingLocation.written = 0
    monkeypatch.setattr(results.ResultsStore, "__init__", _counting_init)
    run_fake_search(tmp_path / f"io-{n_trials}", n_trials)
    return CountingLocation.written


_STORE_INIT = ResultsStore.__init__


def _counting_init(self, experiment):
    _STORE_INIT(self, CountingLocation(experiment.fs, experiment.path, experiment.uri))


def test_writer_io_grows_linearly_with_the_number_of_reports(tmp_path, monkeypatch):
    small = _bytes_written(tmp_path, monkeypatch, 10)
    large = _bytes_written(tmp_path, monkeypatch, 40)
    # Four times the reports: about four times the bytes (a rewrite-everything writer: ~16x).
    assert large < 5 * small, (small, large)


def test_parts_while_running_then_two_tables(tmp_path):
    experiment = tmp_path / "exp"
    callback = ParquetCallback(
        str(experiment), metadata=META, budget_key="epochs", objectives=OBJECTIVES, flush_s=0
    )
    trial = FakeTrial("a", 1e-3)
    callback.on_trial_result(1, [trial], trial, {"iteration": 1, "training_iteration": 1, "val/acc": 0.5})
    callback.on_trial_result(2, [trial], trial, {"iteration": 2, "training_iteration": 2, "val/acc": 0.6})
    assert not (experiment / TRIALS_FILE).exists() and len(list((experiment / PARTS_DIR).iterdir())) == 4
    trials, history = load_results(Location.parse(experiment))
    assert trials.num_rows == 1 and history.num_rows == 2, "readers see the parts of a running search"
    assert trials.to_pylist()[0]["outcome"] == "running"
    trial.status = "TERMINATED"
    callback.on_trial_complete(2, [trial], trial)
    callback.on_experiment_end([trial])
    assert not (experiment / PARTS_DIR).exists() or not list((experiment / PARTS_DIR).iterdir())
    import pyarrow.parquet as pq

    row = pq.read_table(experiment / TRIALS_FILE).to_pylist()[0]
    assert row["outcome"] == "early_stopped" and row["best/val/acc"] == 0.6
    assert pq.read_table(experiment / HISTORY_FILE).num_rows == 2

    # A resumed driver starts from what is on disk and compacts everything again.
    again = run_fake_search(experiment, 2)
    trials, history = load_results(Location.parse(experiment))
    assert sorted(trials.column("trial_id").to_pylist()) == ["a", "t0000", "t0001"]
    assert history.num_rows == 2 + 2 * 3
    assert again.trial_rows()


def test_a_finished_trial_reads_completed_while_the_search_runs(tmp_path):
    # Ray Tune calls on_trial_complete while the trial's status still reads RUNNING; readers of
    # a running search (the resume and cluster tests, `orchestrator results`) must see it done.
    experiment = tmp_path / "exp"
    callback = ParquetCallback(
        str(experiment), metadata=META, budget_key="epochs", objectives=OBJECTIVES, flush_s=3600
    )
    first, second = FakeTrial("a", 1e-3, budget=1), FakeTrial("b", 2e-3, budget=1)
    callback.on_step_end(0, [first, second])
    callback.on_trial_result(
        1, [first, second], first, {"iteration": 1, "training_iteration": 1, "val/acc": 0.5}
    )
    callback.on_trial_complete(1, [first, second], first)  # status still RUNNING here
    rows = {r["trial_id"]: r for r in load_results(Location.parse(experiment))[0].to_pylist()}
    assert rows["a"]["status"] == "TERMINATED" and rows["a"]["outcome"] == "completed"
    first.status = "TERMINATED"
    second.status = "ERROR"
    callback.on_step_end(1, [first, second])  # a status change alone is written at the next flush
    callback.flush()
    rows = {r["trial_id"]: r for r in load_results(Location.parse(experiment))[0].to_pylist()}
    assert rows["a"]["outcome"] == "completed" and rows["b"]["status"] == "ERROR"


def test_a_failure_the_killed_driver_recorded_survives_an_older_tune_snapshot(tmp_path):
    """Ray Tune restores a trial's failure count from its last experiment snapshot, which a
    driver killed seconds after a node loss never wrote: the count read back never drops."""
    experiment = tmp_path / "exp"

    def callback() -> ParquetCallback:
        return ParquetCallback(
            str(experiment), metadata=META, budget_key="epochs", objectives=OBJECTIVES, flush_s=0
        )

    first = callback()
    moved, other = FakeTrial("moved", 1e-3), FakeTrial("other", 2e-3)
    first.on_trial_result(1, [moved], moved, {"iteration": 1, "training_iteration": 1, "val/acc": 0.5})
    moved.num_failures = 1  # its node was lost; it waits to run again elsewhere
    first.on_trial_recover(1, [moved, other], moved)
    first.on_trial_result(1, [moved, other], other, {"iteration": 1, "training_iteration": 1, "val/acc": 0.4})
    recorded = {r["trial_id"]: r for r in load_results(Location.parse(experiment))[0].to_pylist()}
    assert recorded["moved"]["num_failures"] == 1, "the next flush records the failure"

    resumed = callback()
    resumed.setup()
    restored = FakeTrial("moved", 1e-3)  # Tune's older snapshot: no failure yet
    restored.num_failures = 0
    report = {"iteration": 2, "training_iteration": 2, "val/acc": 0.6}
    resumed.on_trial_result(2, [restored], restored, report)
    restored.status = "TERMINATED"
    resumed.on_trial_complete(2, [restored], restored)
    resumed.on_experiment_end([restored])
    row = {r["trial_id"]: r for r in load_results(Location.parse(experiment))[0].to_pylist()}["moved"]
    assert row["num_failures"] == 1 and row["iterations"] == 2
    restored.num_failures = 3  # failures after the resume count on top
    assert {r["trial_id"]: r for r in resumed.trial_rows()}["moved"]["num_failures"] == 3


def test_max_failures_counts_the_failures_of_earlier_drivers(tmp_path):
    """A resumed trial whose snapshot lost a failure gets Tune's count back when it starts, so
    --max-failures 1 stops it at its next failure instead of granting it another."""
    from ray.tune.experiment import Trial

    experiment = tmp_path / "exp"
    first = ParquetCallback(
        str(experiment), metadata=META, budget_key="epochs", objectives=OBJECTIVES, flush_s=0
    )
    moved = FakeTrial("moved", 1e-3)
    moved.num_failures = 1
    first.on_trial_recover(1, [moved], moved)
    first.flush()  # the killed driver's last flush
    resumed = ParquetCallback(str(experiment), metadata=META, budget_key="epochs", objectives=OBJECTIVES)
    resumed.setup()
    trial = Trial("classic", stub=True, max_failures=1, trial_id="moved")
    assert trial.num_failures == 0 and trial.should_recover()
    resumed.on_trial_start(0, [trial], trial)
    assert trial.num_failures == 1
    trial.run_metadata.num_failures += 1  # what Tune does at its next failure
    assert not trial.should_recover()


def test_private_ray_internals_are_all_there():
    from orchestrator import compat

    assert compat.check() == []


def _private_uses(path: Path) -> list[str]:
    """Private attributes read on something other than ``self``/``cls``, private names imported
    from Ray, W&B, Optuna or torchvision, and private library methods overridden."""
    import ast

    libraries = ("ray", "wandb", "optuna", "torchvision")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in libraries:
            names = [*node.module.split("."), *(a.name for a in node.names)]
            if any(n.startswith("_") for n in names):
                found.append(f"{path}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno}: import {a.name}" for a in node.names if "._" in a.name]
    return found


def test_no_private_library_internal_is_used_outside_the_compat_package():
    root = Path(__file__).resolve().parents[1]
    files = [p for d in ("orchestrator", "trainables", "search_spaces") for p in (root / d).rglob("*.py")]
    outside = [p for p in files if "compat" not in p.relative_to(root).parts]
    assert outside and len(outside) < len(files)
    assert [use for p in outside for use in _private_uses(p)] == []
    # The check sees what it looks for: the compat package itself is full of it.
    assert _private_uses(root / "orchestrator" / "compat" / "tune.py")


def _experiment_with_checkpoint(root: Path) -> Path:
    experiment = root / "exp"
    ckpt = experiment / "trial_a" / "checkpoint_000000"
    model = ClassicClassifier(1, 10)
    config = {"dataset": "synthetic", "epochs": 3, "lr": 1e-3}
    state = {
        "trainable": "classic",
        "config": config,
        "iteration": 3,
        "program": {"classifier": model.state_dict()},
    }
    save_checkpoint(state, ckpt)
    history = [{"trial_id": "a", "iteration": i, "val/acc": 0.3 * i} for i in (1, 2, 3)]
    from orchestrator.trial_rows import trial_row

    row = trial_row(
        trial_id="a",
        status="TERMINATED",
        config=config,
        history=history,
        space="classic",
        trainable="classic",
        budget_key="epochs",
        checkpoint_path=str(ckpt),
    )
    ResultsStore(Location.parse(experiment)).append(
        history, [row], {k: json.dumps(v) for k, v in META.items()}
    )
    (experiment / SETTINGS_FILE).write_text(json.dumps({"objectives": OBJECTIVES, "space": "classic"}))
    return experiment


HEAVY = ("ray", "optuna", "wandb", "ray.tune", "ray.air.integrations.wandb")


@pytest.mark.parametrize(
    "command,forbidden",
    [
        (["results", "exp"], (*HEAVY, "torch")),
        (["report", "exp"], (*HEAVY, "torch")),
        pytest.param(["export", "exp", "--out", "{tmp}/model.pt"], HEAVY, marks=pytest.mark.slow),  # torch
        (["params", "adaptive_ratio"], (*HEAVY, "torch", "torchvision")),
        (["spaces"], ("ray", "wandb", "torch", "torchvision")),  # Optuna describes the ranges
    ],
)
def test_readers_import_neither_ray_nor_optuna_nor_wandb(tmp_path, command, forbidden):
    _experiment_with_checkpoint(tmp_path)
    storage = ["--storage", str(tmp_path)] if command[0] in ("results", "report", "export") else []
    args = [a.format(tmp=tmp_path) for a in command] + storage
    script = textwrap.dedent(
        f"""
        import json, sys
        from orchestrator.cli import cli
        try:
            cli.main({args!r}, standalone_mode=False)
        finally:
            print("MODULES=" + json.dumps(sorted(m for m in {list(forbidden)!r} if m in sys.modules)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.rsplit("MODULES=", 1)[1])
    assert loaded == [], f"`orchestrator {command[0]}` imported {loaded}"
    if command[0] == "export":
        assert (tmp_path / "model.pt").exists() and torch.load(tmp_path / "model.pt", weights_only=False)[
            "trial_id"
        ] == "a"


def test_the_dashboard_starts_without_ray_or_torch(tmp_path):
    """`orchestrator dashboard` opens the study and serves it; importing Ray Tune and torch (via
    the resume module) took 3.7 of its 6 s to the first page."""
    import optuna

    experiment = _experiment_with_checkpoint(tmp_path)
    url = f"sqlite:///{experiment / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="exp")
    study.tell(study.ask(), 1.0)
    settings = json.loads((experiment / SETTINGS_FILE).read_text())
    (experiment / SETTINGS_FILE).write_text(json.dumps({**settings, "name": "exp", "study_storage": url}))
    script = textwrap.dedent(
        f"""
        import json, sys
        import orchestrator.dashboard
        orchestrator.dashboard.serve = lambda storage, *a, **k: print("SERVED", type(storage).__name__)
        from orchestrator.cli import cli
        args = {["dashboard", "exp", "--storage", str(tmp_path), "--port", "8799"]!r}
        cli.main(args, standalone_mode=False)
        heavy = ("ray", "ray.tune", "torch", "wandb")
        print("MODULES=" + json.dumps(sorted(m for m in heavy if m in sys.modules)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0 and "SERVED" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert json.loads(out.stdout.rsplit("MODULES=", 1)[1]) == []


def test_evaluate_an_experiment_saves_final_numbers_beside_it(tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli import cli
    from orchestrator.results import load_results

    experiment = _experiment_with_checkpoint(tmp_path)
    args = ["evaluate", "exp", "--storage", str(tmp_path), "--attack", "pgd", "--attack", "apgd-ce"]
    result = CliRunner().invoke(cli, [*args, "-n", "8", "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert line["trial_id"] == "a" and line["n"] == 8 and line["eps_scale"] == "[0, 1] pixels"
    row = load_results(Location.parse(experiment))[0].to_pylist()[0]
    assert row["last/test/apgd_ce_acc"] == line["apgd-ce_acc"] and row["last/test/eval_n"] == 8
    assert row["last/test/pgd40_acc"] == line["pgd_acc"]
    assert row["last/test/strong_worst_acc"] <= min(line["pgd_acc"], line["apgd-ce_acc"])
    assert row["last/val/acc"] == pytest.approx(0.9), "the trial's own values stay"
    again = CliRunner().invoke(cli, [*args[:4], "--attack", "square", "-n", "4"])
    assert again.exit_code == 0 and "evaluations.parquet" in again.output, again.output
    row = load_results(Location.parse(experiment))[0].to_pylist()[0]
    assert row["last/test/eval_n"] == 4 and "last/test/apgd_ce_acc" not in row, "a new evaluation replaces"


def test_evaluate_saves_each_finished_attack_and_sigterm_stops_it(tmp_path, monkeypatch):
    """SIGTERM during the second attack: exit 143 with one line; the first attack's number is
    in evaluations.parquet; progress lines came with an estimate."""
    import os
    import signal
    import time

    from click.testing import CliRunner

    from orchestrator import robustness
    from orchestrator.cli import cli
    from orchestrator.results import load_results

    experiment = _experiment_with_checkpoint(tmp_path)
    real = robustness.run_attack

    def attack(name, *args, **kwargs):
        if name == "apgd-ce":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(robustness, "run_attack", attack)
    args = ["evaluate", "exp", "--storage", str(tmp_path), "--attack", "pgd", "--attack", "apgd-ce"]
    result = CliRunner().invoke(cli, [*args, "-n", "8"])
    assert result.exit_code == 143, result.output
    assert "pgd: 8/8 images" in result.output and "left" in result.output, "progress with an estimate"
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("evaluate interrupted by SIGTERM: each attack that finished is saved in")
    row = load_results(Location.parse(experiment))[0].to_pylist()[0]
    assert row["last/test/pgd40_acc"] is not None
    (saved,) = ResultsStore(Location.parse(experiment)).evaluations()
    assert saved["eval_attacks"] == "pgd"
    assert "last/test/apgd_ce_acc" not in row
    assert signal.getsignal(signal.SIGTERM) is not None


def test_result_lines_print_one_compact_line_per_result_and_per_end():
    from types import SimpleNamespace

    from orchestrator.callbacks import ResultLines

    lines = []
    cb = ResultLines(unit="cycle", budget=3, keys=["val/apgd_acc", "val/acc"], echo=lines.append)
    trial = SimpleNamespace(trial_id="abc_00001", num_failures=0)
    result = {"iteration": 1, "val/acc": 0.93, "val/apgd_acc": 0.25, "time/train_s": 40.2, "time/eval_s": 3.9}
    cb.on_trial_result(1, [], trial, result)
    cb.on_trial_complete(2, [], trial)
    assert lines[0].endswith("abc_00001 cycle 1/3  val/apgd_acc 0.250  val/acc 0.930  (train 40s, val 4s)")
    assert lines[1].endswith("abc_00001 stopped early by the scheduler after cycle 1")
    assert len(lines) == 2
    ended = SimpleNamespace(trial_id="abc_00002", num_failures=0, last_result={"deadline_end": 1})
    cb.on_trial_result(1, [], ended, {"iteration": 2, "val/acc": 0.9})
    cb.on_trial_complete(2, [], ended)
    assert lines[-1].endswith("abc_00002 ended at the search's deadline after cycle 2 (tested, checkpointed)")


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only filesystem (a tmpfs mounted ro; needs root, as in CI)."""
    import subprocess

    target = tmp_path / "ro"
    target.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(target)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a read-only filesystem here")
    yield target
    subprocess.run(["umount", str(target)], check=False)


@pytest.mark.parametrize("where", ["proc", "read-only"])
@pytest.mark.parametrize("command", ["export", "report"])
def test_export_and_report_to_a_place_that_cannot_be_written_is_one_line(tmp_path, request, where, command):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    _experiment_with_checkpoint(tmp_path)
    root = Path("/proc") if where == "proc" else request.getfixturevalue("read_only_dir")
    out = root / ("x.pt" if command == "export" else "report")
    result = CliRunner().invoke(cli, [command, "exp", "--storage", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: --out {out}: cannot write there (")


def _study_only_experiment(root: Path) -> None:
    import optuna

    experiment = root / "d"
    experiment.mkdir()
    optuna.create_study(study_name="d", storage=f"sqlite:///{experiment / 'study.db'}")
    record = {"name": "d", "storage": str(root), "study_storage": "", "study_storage_resolved": "sqlite"}
    (experiment / SETTINGS_FILE).write_text(json.dumps(record))


def test_dashboard_on_a_port_in_use_or_a_bad_host_is_one_line_before_it_listens(tmp_path):
    import socket

    from click.testing import CliRunner

    from orchestrator.cli import cli

    _study_only_experiment(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {
            ("--port", str(port)): "cannot listen there (Address already in use); pick another --port",
            ("--host", "999.1.1.1"): "--host 999.1.1.1: not an address this machine can listen on",
        }
        for args, needle in cases.items():
            result = CliRunner().invoke(cli, ["dashboard", "d", "--storage", str(tmp_path), *args])
            assert result.exit_code == 2, result.output
            (line,) = result.output.strip().splitlines()
            assert needle in line and "Listening" not in result.output


def test_the_returned_line_says_how_fast_the_machine_trained():
    from orchestrator.leaderboard import returned_line

    row = {
        "trial_id": "a",
        "outcome": "completed",
        "iterations": 37,
        "train_time_s": 359.0,
        "config/lr": 0.001,
    }
    line = returned_line(row, ["lr"], "cycle")
    assert line == "returned: trial a (completed, 37 cycle(s), 359 s of training, 9.7 s per cycle): lr=0.0010"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, function-level imports included, ``if
    TYPE_CHECKING:`` blocks left out (they never run)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update(
                m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in modules
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_no_import_cycles():
    """No two modules of the library import each other, directly or through others (function-
    level imports count: they only hide a cycle)."""
    root = Path(__file__).resolve().parents[1]
    paths = {}
    for folder in ("orchestrator", "trainables", "search_spaces"):
        for path in (root / folder).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            paths[name] = path
    graph = {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}
    cycles = []
    for start in graph:  # a path back to itself, by depth-first search
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join((*trail, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    assert not cycles, cycles[:5]


def _own_private_names(cls) -> set[str]:
    """Private names (``_x``) a class of ours defines, or reads or writes on ``self``/``cls`` in
    its methods (its source is its methods': a class made inside a function has no other)."""
    import inspect

    names = set(vars(cls))
    for value in vars(cls).values():
        function = getattr(value, "fget", None) or getattr(value, "__func__", None) or value
        if inspect.isfunction(function):
            for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
                if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in ("self", "cls"):
                    names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


@pytest.mark.slow  # imports Ray Tune
def test_no_private_name_of_a_library_class_is_inherited_or_overridden():
    """A class of ours built on a Ray, W&B or Optuna class uses no private name its library bases
    use (``self._time_attr`` set by Ray's ASHA, a ``_method`` overriding theirs): that is the
    library's internals by inheritance, which a rename upstream breaks silently."""
    import importlib
    import inspect
    import re

    root = Path(__file__).resolve().parents[1]
    ours, found, checked = ("orchestrator", "trainables", "search_spaces"), [], 0
    for path in sorted((root / "orchestrator").rglob("*.py")):
        if "compat" in path.parts:
            continue
        module = importlib.import_module(".".join(path.relative_to(root).with_suffix("").parts))
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            libraries = [
                b for b in cls.__mro__[1:] if b.__module__.split(".")[0] in ("ray", "wandb", "optuna")
            ]
            if not libraries:
                continue
            checked += 1
            theirs = "\n".join(inspect.getsource(b) for b in libraries)
            # compat's own classes may (they are the seam); everything built on them may not
            mine = [
                b for b in cls.__mro__ if b.__module__.split(".")[0] in ours and ".compat" not in b.__module__
            ]
            for base in mine:
                for name in _own_private_names(base):
                    if re.search(rf"(self|cls)\.{name}\b|def {name}\(|^\s*{name}\s*[:=]", theirs, re.M):
                        found.append(f"{cls.__name__} ({base.__name__}): {name}")
    assert checked >= 5, "the check sees our callbacks, schedulers and searchers"
    assert not found, found


def test_parts_are_merged_so_a_long_search_leaves_few_files(tmp_path, monkeypatch):
    import orchestrator.results as results

    monkeypatch.setattr(results, "MERGE_PARTS", 5)
    store = ResultsStore(Location.parse(tmp_path / "exp"))
    meta = {"space": "x"}
    for i in range(23):
        history = [{"trial_id": f"t{i}", "iteration": 1, "v": i / 2}]
        store.append(history, [{"trial_id": f"t{i}", "status": "TERMINATED", "n": i}], meta)
    # 4 merges of 5 parts (one part per table each) and the 3 parts written since.
    assert len(store.part_files()) == 2 * (4 + 3)
    trials, history, read_meta = store.read()
    assert [r["trial_id"] for r in trials] == [f"t{i}" for i in range(23)]
    assert [r["v"] for r in history] == [i / 2 for i in range(23)] and read_meta["space"] == "x"
    # A column typed one way in a part and another way in the next: those parts stay apart.
    again = ResultsStore(Location.parse(tmp_path / "typed"))
    for i in range(5):
        again.append([], [{"trial_id": f"t{i}", "note": i if i % 2 else f"text {i}"}], meta)
    assert len(again.part_files("trials")) == 5
    assert [r["note"] for r in again.read()[0]] == ["text 0", 1, "text 2", 3, "text 4"]


def test_each_step_looks_only_at_trials_whose_row_can_still_change(tmp_path, monkeypatch):
    callback = ParquetCallback(
        str(tmp_path / "exp"), metadata=META, budget_key="epochs", objectives=OBJECTIVES, flush_s=1e9
    )
    trials = [FakeTrial(f"t{i}", 1e-3) for i in range(50)]
    for trial in trials[:49]:
        trial.status = "TERMINATED"
    callback.on_step_end(0, trials)
    callback.flush()
    callback.on_step_end(1, trials)  # the written, finished rows are set aside
    looked: list[str] = []
    status = ParquetCallback._status
    monkeypatch.setattr(
        ParquetCallback, "_status", lambda self, tid, t: looked.append(tid) or status(self, tid, t)
    )
    trials.append(FakeTrial("new", 1e-3))
    callback.on_step_end(2, trials)
    assert sorted(looked) == ["new", "t49"]
    trials[49].status = "TERMINATED"
    callback.on_step_end(3, trials)
    assert callback._dirty == {"new", "t49"}
