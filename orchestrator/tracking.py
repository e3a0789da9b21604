"""Weights & Biases logging: one W&B run per trial, grouped by experiment.

Built on Ray's ``WandbLoggerCallback`` (its logging actors run on the driver's node, so offline
runs land in the trial directories of the experiment). On top of it:

- the mode is chosen up front: ``online`` only with an API key and a reachable server,
  ``offline`` otherwise (``wandb sync`` uploads the run folders later), or ``disabled``;
- the API key never travels in a Ray runtime environment, a config, a callback pickled into the
  experiment state, or a log line: logging actors find it where W&B itself looks (the
  environment the Ray node was started with, or ``~/.netrc`` after ``wandb login``);
- ``media/*`` PNG payloads of a report become ``wandb.Image`` panels;
- the objective metric(s) get a best-value summary, so W&B's parallel-coordinates and
  parameter-importance panels rank trials like the search does;
- a trial resumed after a failure continues its W&B run (``resume="allow"``; offline, the
  second run folder carries the same run id and ``wandb sync`` appends it).
"""

from __future__ import annotations

import io
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs

from orchestrator.choices import WANDB_MODES
from orchestrator.compat import ray_wandb
from orchestrator.compat import tune as tune_compat
from orchestrator.compat.ray_wandb import WandbCallbackBase

API_KEY_ENV = "WANDB_API_KEY"


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def has_api_key() -> bool:
    if os.environ.get(API_KEY_ENV):
        return True
    netrc = os.path.expanduser("~/.netrc")
    if os.path.exists(netrc):
        try:
            with open(netrc) as f:
                return "api.wandb.ai" in f.read() or bool(os.environ.get("WANDB_BASE_URL"))
        except OSError:
            return False
    return False


def _server_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(requested: str | None = None) -> tuple[str, str]:
    """The W&B mode to use and why: explicit, ``$WANDB_MODE``, else online only when a key
    is set and the server answers, offline otherwise."""
    if requested:
        if requested not in WANDB_MODES:
            raise ValueError(f"unknown W&B mode {requested!r}; choose from {', '.join(WANDB_MODES)}")
        return requested, "requested"
    env = os.environ.get("WANDB_MODE")
    if env in WANDB_MODES:
        return env, "from WANDB_MODE"
    if env == "dryrun":
        return "offline", "from WANDB_MODE"
    if not has_api_key():
        return "offline", "no API key"
    if not _server_reachable():
        return "offline", "W&B server unreachable"
    return "online", "API key set"


def run_dir(trial) -> str:
    """Where a trial's W&B run folder goes: straight into the trial's directory in the
    experiment's storage when that is a local disk (Ray would otherwise copy its staging folder
    there before W&B has finished writing), else the trial's local staging folder, which
    :func:`copy_runs_to_storage` uploads at the end."""
    if tune_compat.trial_storage(trial).local:
        path = trial.path
    else:
        path = trial.local_path
    os.makedirs(path, exist_ok=True)
    return path


def copy_runs_to_storage(staging_root: str, fs, experiment_path: str) -> int:
    """Upload the W&B folders of locally staged trials to a remote experiment folder."""
    copied = 0
    if not os.path.isdir(staging_root):
        return 0
    for trial_dir in sorted(os.listdir(staging_root)):
        source = os.path.join(staging_root, trial_dir, "wandb")
        if os.path.isdir(source):
            target = f"{experiment_path}/{trial_dir}/wandb"
            pyarrow.fs.copy_files(source, target, destination_filesystem=fs)
            copied += 1
    return copied


def _decode_png(png: bytes):
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def full_config(base: dict | None, config: dict) -> dict:
    """Every parameter of the trial, flat, tuples as lists: the search's validated base config
    (the trainable's defaults, what the search set; validated once, by the plan) under the
    trial's own values (the sampled parameters). Nothing is validated again here."""
    merged = {**(base or {}), **config}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}


class WandbCallback(WandbCallbackBase):
    """One W&B run per trial: group = experiment, job type = space, flat config, every
    report's metrics, media images, best-value summaries of the objective(s)."""

    def __init__(
        self,
        *,
        project: str,
        group: str,
        job_type: str,
        mode: str,
        objectives: Sequence[tuple[str, str]],
        tags: Sequence[str] = (),
        upload_timeout: int | None = None,
        base_config: dict | None = None,
    ):
        if mode not in WANDB_MODES:
            raise ValueError(f"unknown W&B mode {mode!r}")
        super().__init__(
            project=project,
            group=group,
            job_type=job_type,
            tags=list(tags),
            mode=mode,
            resume="allow",
            # A bounded wait at the end for W&B to finish writing (offline: seconds, unless the
            # machine is very busy) or uploading (online); a run that misses it is reported.
            upload_timeout=upload_timeout or (300 if mode != "online" else 900),
            excludes=["node_id", "done", "should_checkpoint"],
        )
        self.objectives = [tuple(o) for o in objectives]
        self.wandb_mode = mode
        #: The plan's validated base config: every parameter's value unless the trial sets it.
        self.base_config = dict(base_config or {})

    def setup(self, *args, **kwargs):
        if self.wandb_mode != "online":
            # Ray's setup insists on an API key unless WANDB_MODE says otherwise.
            os.environ.setdefault("WANDB_MODE", self.wandb_mode)
        super().setup(*args, **kwargs)

    def start_run(self, trial, start, wandb_init_kwargs: dict) -> None:
        # Ray would copy WANDB_API_KEY into the actor's runtime environment, which Ray keeps
        # and may log. Hide it while the actor class is made; the actor runs on this node and
        # finds the key in the node's environment or ~/.netrc, as W&B does everywhere.
        key = os.environ.pop(API_KEY_ENV, None)
        try:
            storage = tune_compat.trial_storage(trial)
            if not storage.local:
                self._remote = (storage.driver_staging_path, storage.filesystem, storage.experiment_path)
            ray_wandb.use_unrestartable_logging_actors(self)
            wandb_init_kwargs["dir"] = run_dir(trial)
            wandb_init_kwargs["config"] = full_config(
                getattr(self, "base_config", None), wandb_init_kwargs.get("config", {})
            )
            start(objectives=self.objectives, **wandb_init_kwargs)
        finally:
            if key is not None:
                os.environ[API_KEY_ENV] = key

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_parquet_history", None)  # a cache of the Parquet history (see _missing_steps)
        return state

    def log_trial_result(self, iteration, trial, result):
        if trial not in ray_wandb.wandb_started_trials(self):  # this driver's first result of it
            for row in self._missing_steps(trial, int(result.get("iteration") or 0)):
                self._submit(trial, row)
        self._submit(trial, result)

    def _submit(self, trial, result: dict) -> None:
        # PNG payloads -> HxWxC arrays, which Ray turns into wandb.Image panels.
        decoded = {
            k: _decode_png(v) for k, v in result.items() if k.startswith("media/") and isinstance(v, bytes)
        }
        # Submitted without waiting for the queue actor (see ray_wandb.wandb_submit_result);
        # a failed put surfaces at a later result or at the trial's end.
        put = ray_wandb.wandb_submit_result(self, trial, {**result, **decoded})
        self._puts = [*self._check_puts(timeout=0), put]

    def _missing_steps(self, trial, upto: int) -> list[dict]:
        """Iterations before ``upto`` that an earlier driver of this trial reported (they are
        in the experiment's Parquet history) but whose W&B run never wrote them (it was killed
        first): logged again, first, so that the synced run has no gap. Local storage only."""
        if upto <= 1 or not tune_compat.trial_storage(trial).local:
            return []
        if not list(Path(trial.path).glob("wandb/*run-*")):
            return []  # the trial's first run: nothing to catch up
        from orchestrator.compat.wandb_files import logged_steps
        from orchestrator.results import ResultsStore
        from orchestrator.storage import Location

        if getattr(self, "_parquet_history", None) is None:
            store = ResultsStore(Location.parse(tune_compat.trial_storage(trial).experiment_path))
            try:
                self._parquet_history = store.read()[1] if store.has_results() else []
            except Exception as exc:  # damaged tables: resume refuses those before it gets here
                warn(f"W&B: cannot read the history to catch up interrupted runs: {_first_line(exc)}")
                self._parquet_history = []
        logged = logged_steps(trial.path)
        rows = sorted(
            (r for r in self._parquet_history if r["trial_id"] == trial.trial_id),
            key=lambda r: int(r.get("iteration") or 0),
        )
        return [
            {k: v for k, v in r.items() if k != "trial_id"}
            for r in rows
            if 0 < int(r.get("iteration") or 0) < upto and int(r["iteration"]) not in logged
        ]

    def _check_puts(self, timeout: float | None) -> list:
        """Raise the error of any finished put that failed; the puts still under way."""
        import ray

        puts = getattr(self, "_puts", [])
        if not puts:
            return []
        done, pending = ray.wait(puts, num_returns=len(puts), timeout=timeout)
        ray.get(done)
        return pending

    def log_trial_end(self, trial, failed: bool = False):
        self._puts = self._check_puts(timeout=30)  # every result queued before the end marker
        self._ended_runs = {*getattr(self, "_ended_runs", set()), trial.trial_id}
        super().log_trial_end(trial, failed)

    def on_experiment_end(self, trials, **info):
        """Every run gets its last results and its end marker (the runs of trials a Ctrl-C
        stopped too), then W&B gets up to ``upload_timeout`` seconds to finish writing them; a
        run that does not finish in time, or fails, is reported, never dropped silently."""
        import ray

        self._puts = self._check_puts(timeout=30)
        ended = getattr(self, "_ended_runs", set())
        for trial in ray_wandb.wandb_started_trials(self):
            if trial.trial_id not in ended:
                ray_wandb.wandb_stop_run(self, trial)
        futures = ray_wandb.wandb_run_futures(self)
        timeout = ray_wandb.wandb_upload_timeout(self)
        if futures:
            done, remaining = ray.wait(list(futures), num_returns=len(futures), timeout=timeout)
            for future in done:
                try:
                    ray.get(future)
                except Exception as exc:  # the run's own error; the others are unaffected
                    warn(f"W&B: the run of trial {futures[future].trial_id} failed: {_first_line(exc)}")
            for future in remaining:
                warn(
                    f"W&B: the run of trial {futures[future].trial_id} did not finish writing within "
                    f"{timeout} s and was stopped; its files may be incomplete"
                )
        super().on_experiment_end(trials, **info)  # collects the finished logging actors
        remote = getattr(self, "_remote", None)
        if remote:
            copy_runs_to_storage(*remote)
