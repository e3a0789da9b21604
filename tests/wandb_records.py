"""Read the records of a W&B offline run file (``run-ID.wandb``) for tests.

The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB
blocks of records, each with a 7-byte header (crc32, little-endian length, type: 1 full,
2 first, 3 middle, 4 last) and a ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024


def records(path: str | Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, buffer = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            buffer = chunk
        elif kind == 2:
            buffer = chunk
            continue
        elif kind == 3:
            buffer += chunk
            continue
        else:
            buffer += chunk
        record = pb.Record()
        record.ParseFromString(buffer)
        yield record
        buffer = b""


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
