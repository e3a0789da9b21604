"""An sbatch script for a search on a SLURM allocation (the head/worker pattern of Ray's SLURM
guide): the batch script runs on the allocation's first node, starts the Ray head there and a
Ray worker on every other node (one ``srun`` step each), then runs the search on the head with
``--address``. Submitted again (after a time limit or a preemption) it resumes the search.

SLURM stops a job with SIGTERM: at the time limit to every process of the job, or, with
``--signal=B:TERM@SECONDS`` (set here), to the batch script that many seconds before. The
script passes it on to the search's driver, which records the unfinished trials as
interrupted and exits 143; ``sbatch`` of the same script continues them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from orchestrator.kuberay import OWN_FLAGS

TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")
MEMORY = re.compile(r"^\d+[KMGT]?$")


class ScriptError(ValueError):
    """A request that cannot make a working job (one line for the CLI)."""


@dataclass(frozen=True)
class SlurmRequest:
    name: str
    storage: str
    search_args: tuple[str, ...] = ()
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_node: int = 8
    memory: str = ""
    time: str = "04:00:00"
    partition: str = ""
    setup: str = ""
    port: int = 6379
    grace_s: int = 120

    def check(self) -> None:
        if not self.name or not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            raise ScriptError(f"--name {self.name!r}: use letters, digits, '.', '_' and '-'")
        if not self.storage.strip():
            raise ScriptError("--storage is empty: name a folder on a shared filesystem or a URI")
        if self.nodes < 1:
            raise ScriptError(f"--nodes {self.nodes}: a job needs at least one node")
        if self.gpus_per_node < 0:
            raise ScriptError(f"--gpus-per-node {self.gpus_per_node} is negative")
        if self.cpus_per_node < 1:
            raise ScriptError(f"--cpus-per-node {self.cpus_per_node}: a node needs at least one CPU")
        if not TIME.match(self.time):
            raise ScriptError(f"--time {self.time!r} is not a SLURM time (e.g. 04:00:00 or 1-12:00:00)")
        if self.memory and not MEMORY.match(self.memory):
            raise ScriptError(f"--memory {self.memory!r} is not a SLURM size (e.g. 64G)")
        if not 1024 <= self.port <= 65535:
            raise ScriptError(f"--port {self.port} is outside 1024-65535")
        for flag in (*OWN_FLAGS, "--name"):
            if any(a == flag or a.startswith(flag + "=") for a in self.search_args):
                raise ScriptError(f"{flag} is set by the script; leave it out of the search arguments")


def _directives(r: SlurmRequest) -> list[str]:
    lines = [
        f"--job-name={r.name}",
        f"--nodes={r.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={r.cpus_per_node}",
        f"--time={r.time}",
        f"--output={r.name}-%j.out",
        # SIGTERM to this script before the time limit: the search records its trials.
        f"--signal=B:TERM@{r.grace_s}",
    ]
    if r.gpus_per_node:
        lines.insert(3, f"--gpus-per-task={r.gpus_per_node}")
    if r.memory:
        lines.append(f"--mem={r.memory}")
    if r.partition:
        lines.append(f"--partition={r.partition}")
    return [f"#SBATCH {line}" for line in lines]


BODY = r"""
set -euo pipefail
STORAGE={storage}
NAME={name}
PORT={port}
CPUS="${{SLURM_CPUS_PER_TASK:-{cpus}}}"
GPUS={gpus}
{setup}
# --- Ray: the head on this (the first) node, a worker on every other node ---
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node="${{nodes[0]}}"
head_ip="$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{{print $1}}')"
address="$head_ip:$PORT"
echo "ray: head on $head_node ($address), $(( ${{#nodes[@]}} - 1 )) worker node(s)"
srun --nodes=1 --ntasks=1 -w "$head_node" ray start --head --block --port="$PORT" \
    --node-ip-address="$head_ip" --num-cpus="$CPUS" --num-gpus="$GPUS" --include-dashboard=false &
ray_steps=($!)
stop_ray() {{
  kill -TERM "${{ray_steps[@]}}" 2>/dev/null || true
  wait "${{ray_steps[@]}}" 2>/dev/null || true
}}
trap stop_ray EXIT
for _ in $(seq 90); do
  ray status --address "$address" >/dev/null 2>&1 && break
  sleep 2
done
ray status --address "$address" >/dev/null 2>&1 || {{ echo "ray: the head did not start" >&2; exit 1; }}
for node in "${{nodes[@]:1}}"; do
  srun --nodes=1 --ntasks=1 -w "$node" ray start --block --address="$address" \
      --num-cpus="$CPUS" --num-gpus="$GPUS" &
  ray_steps+=($!)
done
# --- the search on the head: a new one, or the one an earlier job of this script began ---
if orchestrator results "$NAME" --storage "$STORAGE" >/dev/null 2>&1; then
  search=(orchestrator resume "$NAME" --storage "$STORAGE" --address "$address")
else
  search=(orchestrator search --name "$NAME" --storage "$STORAGE" --address "$address"{search_args})
fi
echo "search: ${{search[*]}}"
"${{search[@]}}" &
driver=$!
trap 'kill -TERM "$driver" 2>/dev/null || true' TERM INT
code=0
wait "$driver" || code=$?
while kill -0 "$driver" 2>/dev/null; do  # a trapped signal ended `wait`; the driver finishes
  code=0
  wait "$driver" || code=$?
done
exit "$code"
"""


def render(request: SlurmRequest) -> str:
    """The sbatch script of ``request`` (checked: :class:`ScriptError`)."""
    request.check()
    extra = "".join(f" {shlex.quote(a)}" for a in request.search_args)
    body = BODY.format(
        storage=shlex.quote(request.storage),
        name=shlex.quote(request.name),
        port=request.port,
        cpus=request.cpus_per_node,
        gpus=request.gpus_per_node,
        setup=request.setup.strip() + "\n" if request.setup.strip() else "",
        search_args=extra,
    )
    head = [
        "#!/bin/bash",
        *_directives(request),
        "# Written by `orchestrator cluster slurm`. Submit with `sbatch THIS_FILE`; submit it again",
        "# after a time limit or a preemption and it resumes the search.",
    ]
    return "\n".join(head) + "\n" + body.lstrip("\n")
