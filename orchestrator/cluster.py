"""Checks of a Ray cluster launcher config before ``ray up`` spends money.

:func:`validate_cluster_config` runs the file through Ray's own preparation and schema
validation (through ``orchestrator.compat.core.prepare_cluster_config``, as Ray's
autoscaler tests do: unknown keys, integer resources, worker counts) and adds the project's
rules: a pinned ``rayproject/ray`` image of the installed Ray version (not the deprecated
``ray-ml`` images), GPU worker types, a storage URI every node can reach, and no secret written
in the file. Errors make the config unusable; warnings are placeholders still to edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.storage import is_uri

#: Instance families with GPUs (AWS), for configs that leave ``resources`` to the launcher.
GPU_FAMILIES = ("p2", "p3", "p4", "p5", "g3", "g4", "g5", "g6", "g7", "gr6")
PLACEHOLDERS = ("my-bucket", "123456789012")
SECRET_PATTERNS = {
    "a W&B API key": re.compile(r"\b[0-9a-f]{40}\b"),
    "an AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "an AWS secret key": re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*\S{20,}"),
}
STORAGE_RE = re.compile(r"ORCHESTRATOR_STORAGE=([^\s'\"]+)")


@dataclass
class ClusterCheck:
    path: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _is_gpu_type(node_type: dict[str, Any]) -> bool:
    resources = node_type.get("resources") or {}
    if resources.get("GPU", 0) > 0:
        return True
    instance = str(node_type.get("node_config", {}).get("InstanceType", ""))
    return instance.split(".")[0].rstrip("dn") in GPU_FAMILIES or instance.split(".")[0] in GPU_FAMILIES


def prepare_and_validate(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own config preparation (defaults merged) and schema validation; raises on errors."""
    import logging

    from orchestrator.compat.core import prepare_cluster_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)
    return prepare_cluster_config(config)


def _check_image(prepared: dict[str, Any], check: ClusterCheck) -> str:
    """The docker image: a rayproject/ray image of the installed Ray's version."""
    import ray

    image = str((prepared.get("docker") or {}).get("image", ""))
    if "ray-ml" in image:
        check.errors.append(
            f"docker image {image}: the rayproject/ray-ml images are deprecated; use rayproject/ray"
        )
    elif image.startswith("rayproject/ray:") and not image.split(":", 1)[1].startswith(ray.__version__):
        check.errors.append(f"docker image {image} does not match the installed Ray {ray.__version__}")
    elif not image:
        check.warnings.append("no docker image: the setup commands must install Ray " + ray.__version__)
    return image


def validate_cluster_config(path: str | Path) -> ClusterCheck:
    """Ray's own validation of the launcher file at ``path``, then the project's rules."""
    check = ClusterCheck(str(path))
    text = Path(path).read_text()
    for what, pattern in SECRET_PATTERNS.items():
        if pattern.search(text):
            check.errors.append(f"the file contains what looks like {what}; keep secrets out of it")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        check.errors.append(f"not valid YAML: {str(exc).splitlines()[0]}")
        return check
    if not isinstance(config, dict):
        check.errors.append("not a cluster config (expected a mapping at the top level)")
        return check
    try:
        prepared = prepare_and_validate(config)
    except Exception as exc:  # jsonschema.ValidationError, ValueError, KeyError, ...
        message = getattr(exc, "message", None) or str(exc)
        where = "/".join(str(p) for p in getattr(exc, "absolute_path", []) or [])
        check.errors.append(
            f"Ray rejects it: {message.splitlines()[0]}" + (f" (at {where})" if where else "")
        )
        return check

    image = _check_image(prepared, check)

    node_types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    gpu_types = [name for name, nt in node_types.items() if name != head and _is_gpu_type(nt)]
    if not gpu_types:
        check.errors.append("no GPU worker type: trials would have nowhere to use --gpus-per-trial")
    spot = [n for n in gpu_types if node_types[n].get("node_config", {}).get("InstanceMarketOptions")]

    commands = " ".join(prepared.get("setup_commands", []) + prepared.get("head_setup_commands", []))
    storage = STORAGE_RE.search(commands)
    if not storage:
        check.errors.append(
            "no ORCHESTRATOR_STORAGE in the setup commands: multi-node searches need "
            "storage every node can reach (an s3:// URI)"
        )
    elif not is_uri(storage.group(1)):
        check.errors.append(
            f"ORCHESTRATOR_STORAGE={storage.group(1)} is a node-local path; use a URI "
            "every node can reach (s3://...)"
        )
    for placeholder in PLACEHOLDERS:
        if placeholder in text:
            check.warnings.append(f"'{placeholder}' is a placeholder: edit it before `ray up`")

    for name, nt in node_types.items():
        instance = nt.get("node_config", {}).get("InstanceType", "?")
        role = "head" if name == head else f"{nt.get('min_workers', 0)}-{nt.get('max_workers')} workers"
        market = ", spot" if name in spot else ""
        check.summary.append(f"{name}: {instance} ({role}{market})")
    check.summary.append(
        f"provider {prepared['provider'].get('type')} {prepared['provider'].get('region', '')}, "
        f"image {image or '-'}, storage {storage.group(1) if storage else '-'}"
    )
    return check
