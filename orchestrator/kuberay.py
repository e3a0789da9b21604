"""KubeRay manifests for a search: a RayJob (KubeRay starts a Ray cluster, runs the search on it
and deletes the cluster when it ends) or a standalone RayCluster to submit searches to.

The manifest holds no secret. The W&B API key reaches every pod from a Kubernetes Secret
(``kubectl create secret generic wandb --from-literal=api-key=...``) through ``secretKeyRef``;
S3 credentials come from a Secret of ``AWS_*`` variables (``envFrom``) or the pods' service
account (IRSA, workload identity). The experiment lives on ``--storage``, a URI every pod
reaches: pods share no disk.

:func:`check_manifest` checks a generated manifest against :data:`SCHEMA`, a strict subset of
KubeRay's ``ray.io/v1`` CRDs (written from the v1.7.0 CRD YAML: field names, types, required
fields, enums) that also refuses fields the CRDs do not have. Kubernetes itself prunes unknown
fields silently, so a typo would otherwise pass ``kubectl apply``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator.storage import is_uri

API_VERSION = "ray.io/v1"
#: Kubernetes resource quantities ("4", "500m", "16Gi", "1.5").
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
#: Search flags the manifest sets itself.
OWN_FLAGS = ("--address", "--storage")


class ManifestError(ValueError):
    """A request that cannot make a working cluster (one line for the CLI)."""


@dataclass(frozen=True)
class KubeRayRequest:
    name: str
    image: str
    storage: str
    search_args: tuple[str, ...] = ()
    namespace: str = "default"
    kind: str = "RayJob"
    workers: int = 1
    gpus_per_worker: int = 1
    cpus_per_worker: str = "8"
    memory_per_worker: str = "32Gi"
    head_cpus: str = "4"
    head_memory: str = "16Gi"
    wandb_secret: str = "wandb"
    wandb_secret_key: str = "api-key"
    aws_secret: str = ""
    service_account: str = ""
    s3_endpoint: str = ""
    ttl_seconds: int = 3600

    def check(self) -> None:
        """Refuse what cannot run, before anything is written."""
        if not self.image.strip():
            raise ManifestError("--image is empty: name the container image of the project")
        if not NAME.match(self.name):
            raise ManifestError(f"--name {self.name!r} is not a Kubernetes name (a-z, 0-9 and '-')")
        if not is_uri(self.storage):
            raise ManifestError(
                f"--storage {self.storage!r} is a local path: pods share no disk; give a URI every "
                "pod reaches (s3://bucket/prefix, gs://...)"
            )
        if self.workers < 1:
            raise ManifestError(f"--workers {self.workers}: a search needs at least one worker pod")
        if self.gpus_per_worker < 0:
            raise ManifestError(f"--gpus-per-worker {self.gpus_per_worker} is negative")
        for flag, value in (
            ("--cpus-per-worker", self.cpus_per_worker),
            ("--memory-per-worker", self.memory_per_worker),
            ("--head-cpus", self.head_cpus),
            ("--head-memory", self.head_memory),
        ):
            if not QUANTITY.match(value) or float(re.sub(r"[a-zA-Z]+$", "", value)) <= 0:
                raise ManifestError(f"{flag} {value!r} is not a positive quantity (e.g. 8, 500m, 32Gi)")
        for flag in OWN_FLAGS:
            if any(a == flag or a.startswith(flag + "=") for a in self.search_args):
                raise ManifestError(f"{flag} is set by the manifest; leave it out of the search arguments")


def _env(request: KubeRayRequest) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "ORCHESTRATOR_STORAGE", "value": request.storage},
        {
            "name": "WANDB_API_KEY",
            "valueFrom": {
                "secretKeyRef": {
                    "name": request.wandb_secret,
                    "key": request.wandb_secret_key,
                    "optional": True,  # without it, W&B runs offline in the pods
                }
            },
        },
    ]
    if request.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": request.s3_endpoint})
    return env


def _pod(request: KubeRayRequest, container: str, limits: dict[str, str], ports: list | None = None) -> dict:
    requests = {k: v for k, v in limits.items() if k in ("cpu", "memory")}
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": container,
                "image": request.image,
                "env": _env(request),
                "resources": {"limits": dict(limits), "requests": requests},
                **({"ports": ports} if ports else {}),
            }
        ]
    }
    if request.aws_secret:
        spec["containers"][0]["envFrom"] = [{"secretRef": {"name": request.aws_secret}}]
    if request.service_account:
        spec["serviceAccountName"] = request.service_account
    if "nvidia.com/gpu" in limits:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"metadata": {"labels": {"app.kubernetes.io/part-of": "robust-orchestrator"}}, "spec": spec}


def cluster_spec(request: KubeRayRequest, ray_version: str) -> dict[str, Any]:
    """A RayCluster spec: a head that runs the driver, Optuna and W&B logging but no trials (it
    offers Ray no CPUs or GPUs), and one worker group of ``workers`` identical pods."""
    head_ports = [
        {"containerPort": 6379, "name": "gcs-server"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
    ]
    limits = {"cpu": request.cpus_per_worker, "memory": request.memory_per_worker}
    if request.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(request.gpus_per_worker)
    head = {"cpu": request.head_cpus, "memory": request.head_memory}
    return {
        "rayVersion": ray_version,
        "headGroupSpec": {
            "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
            "template": _pod(request, "ray-head", head, head_ports),
        },
        "workerGroupSpecs": [
            {
                "groupName": "gpu" if request.gpus_per_worker else "cpu",
                "replicas": request.workers,
                "minReplicas": request.workers,
                "maxReplicas": request.workers,
                "rayStartParams": {},
                "template": _pod(request, "ray-worker", limits),
            }
        ],
    }


def entrypoint(request: KubeRayRequest) -> str:
    """The search command the RayJob runs on the head: it joins the cluster and writes to the
    storage URI."""
    args = ["orchestrator", "search", "--address", "auto", "--storage", request.storage]
    if not any(a == "--name" or a.startswith("--name=") for a in request.search_args):
        args += ["--name", request.name]
    return shlex.join([*args, *request.search_args])


def manifest(request: KubeRayRequest, ray_version: str) -> dict[str, Any]:
    """The RayJob or RayCluster of ``request`` (checked: :class:`ManifestError`)."""
    request.check()
    metadata = {
        "name": request.name,
        "namespace": request.namespace,
        "labels": {"app.kubernetes.io/part-of": "robust-orchestrator"},
    }
    spec = cluster_spec(request, ray_version)
    if request.kind == "RayCluster":
        out = {"apiVersion": API_VERSION, "kind": "RayCluster", "metadata": metadata, "spec": spec}
    else:
        out = {
            "apiVersion": API_VERSION,
            "kind": "RayJob",
            "metadata": metadata,
            "spec": {
                "entrypoint": entrypoint(request),
                "submissionMode": "K8sJobMode",
                # The search's driver handles SIGTERM (trials recorded interrupted; resume later).
                "shutdownAfterJobFinishes": True,
                "ttlSecondsAfterFinished": request.ttl_seconds,
                "rayClusterSpec": spec,
            },
        }
    problems = check_manifest(out)
    if problems:  # a bug here, not the user's input
        raise AssertionError("; ".join(problems))
    return out


def render(request: KubeRayRequest, ray_version: str) -> str:
    head = (
        f"# {request.kind} for `orchestrator search` on KubeRay, written by `orchestrator cluster kuberay`.\n"
        f"# kubectl create secret generic {request.wandb_secret} "
        f"--from-literal={request.wandb_secret_key}=$WANDB_API_KEY   # once per namespace\n"
        "# kubectl apply -f THIS_FILE\n"
    )
    return head + yaml.safe_dump(manifest(request, ray_version), sort_keys=False)


# ---- the schema: a strict subset of KubeRay's ray.io/v1 CRDs and Kubernetes' PodSpec ----


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    closed = {"additionalProperties": False}
    return {"type": "object", "properties": properties, "required": list(required), **closed}


_STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_QUANTITY_MAP = {"type": "object", "additionalProperties": {"type": "string", "pattern": QUANTITY.pattern}}
_ENV = _obj(
    {
        "name": _STR,
        "value": _STR,
        "valueFrom": _obj(
            {"secretKeyRef": _obj({"name": _STR, "key": _STR, "optional": _BOOL}, ("key",))},
        ),
    },
    ("name",),
)
_CONTAINER = _obj(
    {
        "name": _STR,
        "image": _STR,
        "command": {"type": "array", "items": _STR},
        "args": {"type": "array", "items": _STR},
        "env": {"type": "array", "items": _ENV},
        "envFrom": {"type": "array", "items": _obj({"secretRef": _obj({"name": _STR})})},
        "resources": _obj({"limits": _QUANTITY_MAP, "requests": _QUANTITY_MAP}),
        "ports": {
            "type": "array",
            "items": _obj({"containerPort": _INT, "name": _STR, "protocol": _STR}, ("containerPort",)),
        },
    },
    ("name",),
)
_POD_TEMPLATE = _obj(
    {
        "metadata": _obj({"labels": _STR_MAP, "annotations": _STR_MAP}),
        "spec": _obj(
            {
                "containers": {"type": "array", "items": _CONTAINER, "minItems": 1},
                "serviceAccountName": _STR,
                "tolerations": {
                    "type": "array",
                    "items": _obj({"key": _STR, "operator": _STR, "value": _STR, "effect": _STR}),
                },
            },
            ("containers",),
        ),
    }
)
_RAY_START = {"type": "object", "additionalProperties": {"type": "string"}}
_CLUSTER_SPEC = _obj(
    {
        "rayVersion": _STR,
        "headGroupSpec": _obj({"rayStartParams": _RAY_START, "template": _POD_TEMPLATE}, ("template",)),
        "workerGroupSpecs": {
            "type": "array",
            "items": _obj(
                {
                    "groupName": _STR,
                    "replicas": {"type": "integer", "minimum": 0},
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "rayStartParams": _RAY_START,
                    "template": _POD_TEMPLATE,
                },
                ("groupName", "template"),
            ),
        },
    },
    ("headGroupSpec",),
)
_METADATA = _obj({"name": _STR, "namespace": _STR, "labels": _STR_MAP}, ("name",))
SCHEMA = {
    "RayCluster": _obj(
        {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": "RayCluster"},
            "metadata": _METADATA,
            "spec": _CLUSTER_SPEC,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
    "RayJob": _obj(
        {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": "RayJob"},
            "metadata": _METADATA,
            "spec": _obj(
                {
                    "entrypoint": _STR,
                    "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
                    "shutdownAfterJobFinishes": _BOOL,
                    "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                    "rayClusterSpec": _CLUSTER_SPEC,
                },
                ("entrypoint", "rayClusterSpec"),
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
}


def check_manifest(document: dict[str, Any]) -> list[str]:
    """Problems of a RayJob or RayCluster manifest against :data:`SCHEMA` (empty: valid)."""
    import jsonschema

    schema = SCHEMA.get(document.get("kind", ""))
    if schema is None:
        return [f"kind {document.get('kind')!r} is neither RayJob nor RayCluster"]
    validator = jsonschema.Draft202012Validator(schema)
    errors = validator.iter_errors(document)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
