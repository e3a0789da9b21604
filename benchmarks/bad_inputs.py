"""Probe: bad inputs to every command, run as a new user runs them (one process per command).

Builds one tiny finished experiment (synthetic data, one trial, one epoch), then runs each case
below as ``python -m orchestrator.cli ...`` and checks that it ends in a single line of output
with exit code 2 (bad input) or 1 (the environment), no traceback, within its time limit, and
that the experiment's files are unchanged afterwards (nothing lost). Prints one row per case
and a summary; exits 1 if any case fails.

    python benchmarks/bad_inputs.py [--keep DIR] [--only SUBSTRING]

About 4 minutes on 2 CPU cores (most of it is Python importing torch for each command).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXP = "probe-exp"
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
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WANDB_MODE": "disabled",
        "ORCHESTRATOR_STORAGE": str(store),
        "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
    }
    env.pop("WANDB_API_KEY", None)
    if not (store / EXP / "trials.parquet").exists():
        print(f"building the experiment {EXP} (one tiny trial) ...", flush=True)
        made = [*("search", "--space", "classic", "-n", "1", "--max-iterations", "1", "--no-priors"), *TINY]
        code, out, took = run([*made, "--name", EXP, "--storage", str(store), "--num-cpus", "2"], env, 600)
        if code != 0:
            print(out[-3000:])
            return 1
        print(f"  built in {took:.0f} s", flush=True)
    before = snapshot(store / EXP)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        todo = [c for c in cases(store, files, busy.getsockname()[1]) if opts.only in c[0]]
        failed = []
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
            status = "ok  " if not problems else "FAIL"
            shown = lines[-1] if lines else ""
            print(f"{status} {code!s:>4} {took:5.1f}s  {what}: {shown[:150]}", flush=True)
            if problems:
                failed.append((what, problems, out))
    after = snapshot(store / EXP)
    lost = sorted(k for k in before if before[k] != after.get(k))
    print(f"\n{len(todo) - len(failed)}/{len(todo)} cases: one line, exit 2 or 1, no traceback, no hang")
    print("the experiment's files: " + ("unchanged" if not lost else f"CHANGED: {lost}"))
    for what, problems, out in failed:
        print(f"\n--- {what}: {', '.join(problems)}\n{out[-2000:]}")
    return 1 if failed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
