"""Reading W&B's run files (``run-ID.wandb``), which W&B writes online and offline alike.

The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB
blocks of records, each with a 7-byte header (crc32, little-endian length, type: 1 full,
2 first, 3 middle, 4 last) and a ``wandb_internal_pb2.Record`` protobuf. A file cut short (its
process was killed) yields the records before the cut.

``orchestrator resume`` uses :func:`logged_steps` to find the iterations an interrupted driver
reported but W&B never wrote, and logs them again (``orchestrator.tracking``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32 * 1024
MAGIC = b":W&B"


def records(path: str | Path) -> Iterator:
    """The ``Record`` protobufs of a run file, in order (``ValueError`` if it is not one)."""
    from google.protobuf.message import DecodeError

    from orchestrator.compat.libs import wandb_record_class

    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path} is not a W&B run file")
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
        if len(chunk) < length:
            return  # cut short
        pos += 7 + length
        if kind in (1, 2):
            buffer = chunk
            if kind == 2:
                continue
        elif kind == 3:
            buffer += chunk
            continue
        else:
            buffer += chunk
        record = wandb_record_class()()
        try:
            record.ParseFromString(buffer)
        except DecodeError:
            return
        yield record
        buffer = b""


def logged_steps(trial_dir: str | Path) -> set[int]:
    """The W&B steps (the trial's iterations) in every run file under ``trial_dir/wandb``."""
    steps: set[int] = set()
    for path in Path(trial_dir).glob("wandb/*run-*/run-*.wandb"):
        try:
            steps.update(
                r.history.step.num for r in records(path) if r.WhichOneof("record_type") == "history"
            )
        except (OSError, ValueError):
            continue
    return steps
