"""Read W&B run files for tests: :func:`summarize` the records of ``orchestrator.compat.wandb_files``."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.compat.wandb_files import records

__all__ = ["records", "summarize"]


def summarize(path: str | Path) -> dict:
    """Run id / group / job type, the config, every history key, and the summary."""
    out = {"config": {}, "history": [], "summary": {}, "run": {}}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {
                "id": rec.run.run_id,
                "group": rec.run.run_group,
                "job_type": rec.run.job_type,
            }
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            out["history"].append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
