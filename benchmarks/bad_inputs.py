"""Probe: bad inputs to every command, run as a new user runs them (one process per command).

Builds one tiny finished experiment (synthetic data, one trial, one epoch), then runs each case
below as ``python -m orchestrator.cli ...`` and checks that it ends in a single line of output
with exit code 2 (bad input) or 1 (the environment), no traceback, within its time limit, and
that the experiment's files are unchanged afterwards (nothing lost). Files crafted to run code
when unpickled (a pickle, a ``torch.save`` zip, a TorchScript archive, an exported program with a
pickled weight, a replaced checkpoint) must be refused without their code running (a marker file
they would create stays absent). Then the classes that are no one-line case: HTTP requests
that would change the study through the dashboard, concurrent ``evaluate`` writers on one
experiment, and the signals a supervisor or a terminal sends (SIGINT, SIGTERM, SIGHUP) to
``evaluate`` and to a search. Prints one row per case and a summary; exits 1 if any case fails.

    python benchmarks/bad_inputs.py [--keep DIR] [--only SUBSTRING]

About 7 minutes on 2 CPU cores (most of it is Python importing torch for each command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXP = "probe-exp"
#: The search a SIGHUP stopped (its trials unfinished), whose copy gets a checkpoint replaced by code.
SIG = "probe-sighup"
TINY = [
    *("-s", "dataset=synthetic", "-s", "train_subset=256", "-s", "eval_subset=100"),
    *(
        "-s",
        "robust_n=32",
        "-s",
        "test_robust_n=32",
        "-s",
        "pgd_steps=2",
        "-s",
        "apgd_steps=2",
        "-s",
        "test_apgd_steps=2",
        "-s",
        "test_square_queries=10",
    ),
    *("-s", "adv_steps=2"),
]


def cases(store: Path, files: Path, busy_port: int) -> list[tuple[str, list[str]]]:
    """(what a user typed wrong, the command's arguments); --storage is added where it applies."""
    search = ["search", "--space", "classic", "--wandb-mode", "disabled", "-s", "dataset=synthetic"]
    exp = [EXP, "--storage", str(store)]
    copies = store.parent / "copies"
    crafted, gone = ["--storage", str(copies / "crafted")], ["--storage", str(copies / "gone")]
    # a trial of the SIGHUP-stopped search that has a checkpoint (its row names one)
    saved = sorted((copies / "crafted" / SIG).glob("classic_*/checkpoint_*"))
    trial = ["--trial", saved[0].parent.name.split("_", 1)[1]] if saved else []
    ref_code = ["-s", "dataset=synthetic", "-s", f"ref_classifier={files / 'code.pt'}"]
    return [
        ("unknown space", ["search", "--space", "nope"]),
        ("unknown searcher", [*search, "--searcher", "grid"]),
        ("unknown scheduler", [*search, "--scheduler", "pbt"]),
        ("single-objective searcher on pareto", [*search, "--objective", "pareto", "--searcher", "cmaes"]),
        ("range low above high", [*search, "--range", "lr=0.1:0.01"]),
        ("range without colon", [*search, "--range", "lr=0.1"]),
        ("range of an unknown parameter", [*search, "--range", "momentum=0.1:0.2"]),
        ("misspelt parameter", [*search, "-s", "lrr=0.1"]),
        ("parameter above its maximum", [*search, "-s", "lr=5"]),
        ("parameter of the wrong type", [*search, "-s", "lr=abc"]),
        ("zero batch size", [*search, "-s", "batch_size=0"]),
        ("unknown dataset", [*search, "-s", "dataset=imagenet"]),
        ("no Ray head at the address", [*search, "--address", "127.0.0.1:9"]),
        ("no Ray client server at the address", [*search, "--address", "ray://127.0.0.1:18999"]),
        ("address that is not host:port", [*search, "--address", "notanaddress"]),
        ("negative GPUs per trial", [*search, "--gpus-per-trial", "-1"]),
        ("zero CPUs per trial", [*search, "--cpus-per-trial", "0"]),
        ("more CPUs per trial than the machine", [*search, "--cpus-per-trial", "999"]),
        ("a GPU per trial on a machine without", [*search, "--gpus-per-trial", "1"]),
        ("time budget that is no duration", [*search, "--time-budget", "soon"]),
        ("time budget too short", [*search, "--time-budget", "5"]),
        ("negative time budget", [*search, "--time-budget", "-3"]),
        ("zero trials", [*search, "-n", "0"]),
        ("negative trials", [*search, "-n", "-1"]),
        ("zero iterations", [*search, "--max-iterations", "0"]),
        ("negative concurrency", [*search, "--max-concurrent", "-2"]),
        ("300-character name", [*search, "--name", "x" * 300]),
        ("name with a slash", [*search, "--name", "a/b"]),
        ("hidden name", [*search, "--name", ".hidden"]),
        ("storage under /proc", [*search, "--storage", "/proc/x"]),
        ("storage below a file", [*search, "--storage", str(files / "text.txt" / "sub")]),
        ("study storage that is no URL", [*search, "--study-storage", "notaurl"]),
        ("study database nobody serves", [*search, "--study-storage", "postgresql://u:p@127.0.0.1:1/db"]),
        ("warm start from nothing", [*search, "--warm-start", "nope"]),
        ("negative warm-start top", [*search, "--warm-start", EXP, "--warm-start-top", "-1"]),
        ("min-clean above 1", [*search, "--min-clean", "2"]),
        ("unknown W&B mode", [*search, "--wandb-mode", "bogus"]),
        ("W&B online without a key", [*search[:-4], "--wandb-mode", "online", "-s", "dataset=synthetic"]),
        ("dataset missing from the data dir", [*search[:-2], "--data-dir", str(files / "empty")]),
        ("grace period 0", [*search, "--grace-period", "0"]),
        ("reduction factor 1", [*search, "--reduction-factor", "1"]),
        ("rungs in seconds without a time budget", [*search, "--rung-unit", "seconds"]),
        ("seed that is no number", [*search, "--seed", "abc"]),
        ("more CPUs than the machine", [*search, "--num-cpus", "999"]),
        ("an experiment's name taken", [*search, "--name", EXP]),
        ("resume of nothing", ["resume", "nope"]),
        ("resume on an unreachable cluster", ["resume", *exp, "--address", "127.0.0.1:9"]),
        ("results of nothing", ["results", "nope"]),
        ("results top 0", ["results", *exp, "--top", "0"]),
        ("results in an unknown format", ["results", *exp, "--format", "xml"]),
        ("report of nothing", ["report", "nope"]),
        ("report under /proc", ["report", *exp, "--out", "/proc/rep"]),
        ("export of nothing", ["export", "nope", "--out", str(files / "m.pt")]),
        ("export under /proc", ["export", *exp, "--out", "/proc/x.pt"]),
        ("export of an unknown trial", ["export", *exp, "--out", str(files / "m.pt"), "--trial", "zzz"]),
        ("export in an unknown format", ["export", *exp, "--out", str(files / "m.pt"), "--format", "onnx"]),
        ("export without --out", ["export", *exp]),
        ("evaluate a text file", ["evaluate", str(files / "text.txt")]),
        ("evaluate an empty file", ["evaluate", str(files / "empty.pt")]),
        ("evaluate random bytes", ["evaluate", str(files / "random.pt")]),
        ("evaluate with an unknown attack", ["evaluate", *exp, "--attack", "fgsm"]),
        ("evaluate at eps on the 0-255 scale", ["evaluate", *exp, "--eps", "8"]),
        ("evaluate zero images", ["evaluate", *exp, "-n", "0"]),
        ("evaluate on an unknown device", ["evaluate", *exp, "--device", "bogus"]),
        ("evaluate on CUDA without a GPU", ["evaluate", *exp, "--device", "cuda"]),
        ("evaluate top 0", ["evaluate", *exp, "--top", "0"]),
        ("evaluate an unknown trial", ["evaluate", *exp, "--trial", "zzz"]),
        ("evaluate nothing", ["evaluate", "nope", "--storage", str(store)]),
        ("dashboard of nothing", ["dashboard", "nope", "--storage", str(store)]),
        ("dashboard on port 0", ["dashboard", *exp, "--port", "0"]),
        ("dashboard on a port in use", ["dashboard", *exp, "--port", str(busy_port)]),
        ("dashboard on a host that is not one", ["dashboard", *exp, "--host", "999.1.1.1"]),
        ("train an unknown trainable", ["train", "-t", "nope"]),
        ("train zero epochs", ["train", "-t", "classic", "--epochs", "0"]),
        ("train with a negative learning rate", ["train", "-t", "classic", "-s", "lr=-1"]),
        (
            "train on CUDA without a GPU",
            ["train", "-t", "classic", "--device", "cuda", "-s", "dataset=synthetic"],
        ),
        ("params of an unknown trainable", ["params", "nope"]),
        ("validate a missing cluster file", ["cluster", "validate", str(files / "nope.yaml")]),
        ("validate a cluster file of garbage", ["cluster", "validate", str(files / "garbage.yaml")]),
        ("unknown command", ["frobnicate"]),
        # Files crafted to run code when loaded (each would create files/marker).
        ("evaluate a pickle that runs code", ["evaluate", str(files / "code.pkl")]),
        ("evaluate a torch.save file that runs code", ["evaluate", str(files / "code.pt")]),
        ("evaluate a TorchScript archive", ["evaluate", str(files / "script.pt")]),
        ("evaluate an exported program with a pickled weight", ["evaluate", str(files / "pickled.pt2")]),
        ("a reference classifier that runs code", [*search[:2], "wgan_gp", *search[3:], *ref_code]),
        ("train with a reference classifier that runs code", ["train", "-t", "wgan_gp", *ref_code[2:]]),
        (
            "export a checkpoint replaced by code",
            ["export", SIG, *crafted, *trial, "--out", str(files / "m.pt")],
        ),
        ("evaluate a checkpoint replaced by code", ["evaluate", SIG, *crafted, *trial, "-n", "4"]),
        ("resume with a checkpoint replaced by code", ["resume", SIG, *crafted]),
        ("export with its checkpoint folders gone", ["export", EXP, *gone, "--out", str(files / "m.pt")]),
    ]


def run(args: list[str], env: dict, timeout: float) -> tuple[int | None, str, float]:
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return done.returncode, done.stdout + done.stderr, time.monotonic() - start
    except subprocess.TimeoutExpired as exc:
        out = (
            (exc.stdout or b"").decode() + (exc.stderr or b"").decode()
            if isinstance(exc.stdout, bytes)
            else ""
        )
        return None, out, time.monotonic() - start


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "driver.lock" not in p.name
    }


class RunsCode:
    """Unpickling it creates ``marker`` (what a crafted model file would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def craft_files(files: Path) -> Path:
    """Model files that run code when unpickled; returns the marker they would create."""
    import torch

    marker = files / "marker"
    payload = {"format": "robust-orchestrator/classifier/v1", "state_dict": RunsCode(marker)}
    (files / "code.pkl").write_bytes(pickle.dumps(payload))
    torch.save(payload, files / "code.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), files / "script.pt")
    exported = files / "model.pt2"
    from orchestrator.export import _write
    from trainables.models import ClassicClassifier

    state = {"trainable": "classic", "iteration": 1, "config": {"dataset": "synthetic"}}
    state["program"] = {"classifier": ClassicClassifier(1, 10).state_dict()}
    _write(state, {"experiment": None, "trial_id": "t", "metrics": {}}, exported, "exported")
    import zipfile

    with zipfile.ZipFile(exported) as src, zipfile.ZipFile(files / "pickled.pt2", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return marker


def build(store: Path, env: dict) -> bool:
    """The finished experiment EXP, and SIG: a search stopped by SIGHUP after its first
    iteration (the signal case: exit 129, trials interrupted, the resume hint)."""
    if not (store / EXP / "trials.parquet").exists():
        print(f"building the experiment {EXP} (one tiny trial) ...", flush=True)
        made = [*("search", "--space", "classic", "-n", "1", "--max-iterations", "1", "--no-priors"), *TINY]
        code, out, took = run([*made, "--name", EXP, "--storage", str(store), "--num-cpus", "2"], env, 600)
        if code != 0:
            print(out[-3000:])
            return False
        print(f"  built in {took:.0f} s", flush=True)
    return True


def signal_search(store: Path, env: dict, signum: int) -> tuple[bool, str]:
    """A search of 2 trials x 5 epochs stopped by ``signum`` once a trial reported: 128 + signum,
    every unfinished trial ``interrupted``, the resume hint, one stop line."""
    name = f"probe-{signal.Signals(signum).name.lower()}"
    shutil.rmtree(store / name, ignore_errors=True)
    made = [*("search", "--space", "classic", "-n", "2", "--max-iterations", "5", "--no-priors"), *TINY]
    args = [sys.executable, "-m", "orchestrator.cli", *made, "--name", name, "--storage", str(store)]
    log = store.parent / f"{name}.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen(
            [*args, "--num-cpus", "2", "--scheduler", "fifo"],
            env={**env, "ORCHESTRATOR_PARQUET_FLUSH_S": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None:
            if list((store / name).glob("parts/history-*.parquet")):
                break
            time.sleep(0.5)
        driver.send_signal(signum)
        try:
            code = driver.wait(120)
        except subprocess.TimeoutExpired:
            driver.kill()
            code = None
    text = log.read_text()
    name_sig = signal.Signals(signum).name
    ok = (
        code == 128 + signum
        and f"interrupted by {name_sig}" in text
        and f"orchestrator resume {name}" in text
        and "Traceback" not in text
    )
    return ok, f"exit {code}: " + (text.strip().splitlines() or [""])[-1][:150]


def signal_evaluate(busy: Path, env: dict, signum: int) -> tuple[bool, str]:
    """``evaluate`` of a copy of EXP stopped by ``signum`` during its attacks: 128 + signum, one line."""
    args = [sys.executable, "-m", "orchestrator.cli", "evaluate", EXP, "--storage", str(busy), "-n", "64"]
    proc = subprocess.Popen(
        [*args, "--attack", "pgd", "--attack", "apgd-ce"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    first = proc.stdout.readline()  # the first progress line: the attacks have begun
    proc.send_signal(signum)
    try:
        rest = proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return False, f"no exit after {signal.Signals(signum).name}"
    last = (first + rest).strip().splitlines()[-1]
    ok = (
        proc.returncode == 128 + signum
        and last.startswith("evaluate interrupted by")
        and "Traceback" not in rest
    )
    return ok, f"exit {proc.returncode}: {last[:150]}"


def concurrent_evaluates(busy: Path, env: dict) -> tuple[bool, str]:
    """Two ``evaluate`` runs on one experiment at once: both rows in evaluations.parquet."""
    base = [sys.executable, "-m", "orchestrator.cli", "evaluate", EXP, "--storage", str(busy), "-n", "16"]
    runs = [
        subprocess.Popen(
            [*base, "--attack", a], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for a in ("pgd", "apgd-ce")
    ]
    codes = [r.wait(300) for r in runs]
    import pyarrow.parquet as pq

    rows = pq.read_table(busy / EXP / "evaluations.parquet").to_pylist()
    attacks = sorted(r["eval_attacks"] for r in rows)
    return codes == [0, 0] and {"apgd-ce", "pgd"} <= set(attacks), f"exits {codes}, rows {attacks}"


def dashboard_requests(store: Path, env: dict) -> tuple[bool, str]:
    """The dashboard on EXP: DELETE, POST and PUT refused (405), the study intact; a bind
    beyond loopback warns in one line."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, "-m", "orchestrator.cli", "dashboard", EXP, "--storage", str(store)]
    proc = subprocess.Popen(
        [*args, "--port", str(port), "--host", "0.0.0.0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base, statuses = f"http://127.0.0.1:{port}", []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(base + "/api/studies", timeout=5).read()
                break
            except OSError:
                time.sleep(0.5)
        for method, path in (
            ("DELETE", "/api/studies/1"),
            ("POST", "/api/studies"),
            ("PUT", "/api/studies/1/note"),
        ):
            request = urllib.request.Request(base + path, data=b"{}", method=method)
            try:
                statuses.append(urllib.request.urlopen(request, timeout=5).status)
            except urllib.error.HTTPError as err:
                statuses.append(err.code)
        studies = json.loads(urllib.request.urlopen(base + "/api/studies", timeout=5).read())[
            "study_summaries"
        ]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    warned = [line for line in output.splitlines() if line.startswith("warning: --host 0.0.0.0")]
    intact = [s["study_name"] for s in studies] == [EXP]
    ok = statuses == [405, 405, 405] and intact and len(warned) == 1
    return ok, f"DELETE/POST/PUT -> {statuses}, study intact: {intact}, warning lines: {len(warned)}"


def make_copies(store: Path, copies: Path) -> None:
    """crafted/: the SIGHUP-stopped search with every checkpoint replaced by code;
    gone/: EXP without its checkpoint folders; busy/: EXP for the concurrent writers and signals."""
    import torch

    shutil.rmtree(copies, ignore_errors=True)
    shutil.copytree(store / SIG, copies / "crafted" / SIG)
    for checkpoint in (copies / "crafted" / SIG).glob("classic_*/checkpoint_*"):
        code = RunsCode(store.parent / "files" / "marker")
        torch.save({"program": code, "rng": {}, "iteration": 1}, checkpoint / "state.pt")
    shutil.copytree(store / EXP, copies / "gone" / EXP)
    for folder in (copies / "gone" / EXP).glob("*/checkpoint_*"):
        shutil.rmtree(folder)
    shutil.copytree(store / EXP, copies / "busy" / EXP)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="Work in this folder (kept) instead of a temporary one.")
    parser.add_argument("--only", default="", help="Only the cases whose description has this text.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds a case may take.")
    opts = parser.parse_args()
    work = Path(opts.keep or tempfile.mkdtemp(prefix="bad-inputs-"))
    store, files = work / "store", work / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / "empty").mkdir(exist_ok=True)
    (files / "text.txt").write_text("not a model\n")
    (files / "empty.pt").write_bytes(b"")
    (files / "random.pt").write_bytes(os.urandom(4096))
    (files / "garbage.yaml").write_text("{{{ not: [yaml\n")
    marker = craft_files(files)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WANDB_MODE": "disabled",
        "ORCHESTRATOR_STORAGE": str(store),
        "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
    }
    env.pop("WANDB_API_KEY", None)
    if not build(store, env):
        return 1
    failed = []
    print("signals to a search (each: 2 trials stopped after their first report) ...", flush=True)
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        if opts.only and opts.only not in "signals":
            break
        ok, shown = signal_search(store, env, signum)
        print(f"{'ok  ' if ok else 'FAIL'} {signal.Signals(signum).name} to a search: {shown}", flush=True)
        if not ok:
            failed.append((f"{signal.Signals(signum).name} to a search", ["see its log"], ""))
    if not (store / SIG).exists():
        signal_search(store, env, signal.SIGHUP)
    make_copies(store, store.parent / "copies")
    busy = store.parent / "copies" / "busy"
    before = snapshot(store / EXP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        todo = [c for c in cases(store, files, taken.getsockname()[1]) if opts.only in c[0]]
        for what, args in todo:
            code, out, took = run(args, env, opts.timeout)
            lines = [line for line in out.strip().splitlines() if line.strip()]
            problems = []
            if code is None:
                problems.append(f"no answer in {opts.timeout:.0f} s")
            elif code not in (1, 2):
                problems.append(f"exit {code}")
            if "Traceback" in out:
                problems.append("traceback")
            if len(lines) != 1:
                problems.append(f"{len(lines)} lines")
            if marker.exists():
                problems.append("the file's code ran")
                marker.unlink()
            status = "ok  " if not problems else "FAIL"
            shown = lines[-1] if lines else ""
            print(f"{status} {code!s:>4} {took:5.1f}s  {what}: {shown[:150]}", flush=True)
            if problems:
                failed.append((what, problems, out))
    more = [
        ("dashboard requests that would change the study", lambda: dashboard_requests(store, env)),
        ("two concurrent evaluate runs", lambda: concurrent_evaluates(busy, env)),
        *(
            (f"{signal.Signals(s).name} to evaluate", lambda s=s: signal_evaluate(busy, env, s))
            for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        ),
    ]
    for what, check in more:
        if opts.only not in what:
            continue
        ok, shown = check()
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {shown}", flush=True)
        if not ok:
            failed.append((what, ["see above"], ""))
    after = snapshot(store / EXP)
    lost = sorted(k for k in before if before[k] != after.get(k))
    one_line = [c for c in todo if c[0] not in {f[0] for f in failed}]
    print(f"\n{len(one_line)}/{len(todo)} cases: one line, exit 2 or 1, no traceback, no hang, no code run")
    print(f"{len(failed)} failure(s) in all, the signal, dashboard and concurrency checks included")
    print("the experiment's files: " + ("unchanged" if not lost else f"CHANGED: {lost}"))
    for what, problems, out in failed:
        print(f"\n--- {what}: {', '.join(problems)}\n{out[-2000:]}")
    return 1 if failed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
