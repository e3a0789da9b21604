"""Loading model files and checkpoints that may come from elsewhere: tensors and plain data, never code.

Every file this project reads back (an export, a trial's checkpoint, a reference classifier) is
opened with ``torch.load(weights_only=True)``: its pickle may build tensors, containers, numbers
and strings, plus the few numpy types a checkpoint's random state needs, and nothing else. A file
whose unpickling would call anything more (``os.system``, a class's constructor, TorchScript code)
is refused with :class:`UnsafeFile` before any of it runs. ``torch.export`` programs are read
without ``torch.export.load`` (which falls back to a full unpickler): their weights are raw
bytes described by JSON, see :func:`read_exported_weights`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch


class UnsafeFile(ValueError):
    """A file that would run code (or build arbitrary objects) if it were loaded."""


class NotAWeightsFile(ValueError):
    """A file that is not a ``torch.save`` file at all (or is truncated)."""


def _numpy_globals() -> list:
    """What ``np.random.get_state()`` pickles into (in a checkpoint's ``rng``): an array of
    uint32 and its dtype. numpy 1 named the module ``numpy.core``, numpy 2 ``numpy._core``."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    return [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
    ]


SAFE_GLOBALS = _numpy_globals()

_GLOBAL = re.compile(r"GLOBAL (\S+)")


def load_weights(source: str | os.PathLike | bytes | IO[bytes], name: str | None = None) -> Any:
    """``torch.load`` of ``source`` (a path, the file's bytes or a binary file) with
    ``weights_only=True`` on the CPU, torch's warnings kept out of the user's output.

    :class:`UnsafeFile` names what the file would have called; :class:`NotAWeightsFile` is
    raised for a file that is no ``torch.save`` file (truncated, a TorchScript archive...)."""
    if isinstance(source, bytes):
        name, source = name or "the file", io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        name = name or str(source)
    name = name or "the file"
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(SAFE_GLOBALS):
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        called = _GLOBAL.search(str(exc))
        callables = [called.group(1)] if called else _pickled_callables(source)
        if callables is None:  # not a pickle at all (text, random bytes)
            raise NotAWeightsFile(f"{name}: not a torch.save file ({_first_line(exc)})") from None
        what = f"call {callables[0]}" if callables else "build objects other than tensors and plain data"
        raise UnsafeFile(
            f"{name}: refused: loading it would {what} (a model file or checkpoint holds only tensors "
            "and plain data; nothing of it was run)"
        ) from None
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            raise UnsafeFile(
                f"{name}: refused: a TorchScript archive holds code, and this project loads weights only "
                "(export it again with `orchestrator export`)"
            ) from None
        raise NotAWeightsFile(f"{name}: not a torch.save file ({_first_line(exc)})") from None
    except (EOFError, ValueError, KeyError, zipfile.BadZipFile, AttributeError, TypeError) as exc:
        raise NotAWeightsFile(f"{name}: not a torch.save file ({_first_line(exc)})") from None


#: Pickle opcodes that call or import something.
_CALLING = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _pickled_callables(source: Any) -> list[str] | None:
    """What a pickle (a plain one, or a torch.save zip's ``data.pkl``) imports, read with
    ``pickletools`` without running it: the names it imports, ``[]`` when it calls something
    unnamed, ``None`` when it is no pickle at all."""
    import pickletools

    try:
        if isinstance(source, io.BytesIO):
            data = source.getvalue()
        elif hasattr(source, "read"):
            source.seek(0)
            data = source.read()
        else:
            data = Path(source).read_bytes()
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        names, strings, calls = [], [], False
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings = [*strings[-1:], str(arg)]
            elif opcode.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) == 2:
                names.append(".".join(strings))
            calls = calls or opcode.name in _CALLING
    except Exception:  # genops raises ValueError and others on bytes that are no pickle
        return None
    return names if names or calls else None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


#: ``torch._export.serde.schema.ScalarType`` values of the dtypes a classifier's weights use
#: (tests/test_safe_load.py checks them against torch's own loader).
_EXPORT_DTYPES = {
    1: torch.uint8,
    2: torch.int8,
    3: torch.int16,
    4: torch.int32,
    5: torch.int64,
    6: torch.float16,
    7: torch.float32,
    8: torch.float64,
    12: torch.bool,
    13: torch.bfloat16,
}


def is_exported_program(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive (a zip with a weights config)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("data/weights/model_weights_config.json") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_exported_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict and the extra files (text) of a ``torch.export.save`` archive, read from
    its raw weight bytes and JSON alone: nothing is unpickled and no program is built. A weight
    stored as a pickle is refused (:class:`UnsafeFile`)."""
    name = str(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        config_name = next(n for n in names if n.endswith("data/weights/model_weights_config.json"))
        root = config_name[: -len("data/weights/model_weights_config.json")]
        config = json.loads(archive.read(config_name))["config"]
        weights = {}
        for key, entry in config.items():
            if entry.get("use_pickle"):
                raise UnsafeFile(f"{name}: refused: its weight {key} is stored as a pickle (weights only)")
            meta = entry["tensor_meta"]
            dtype = _EXPORT_DTYPES.get(meta["dtype"])
            if dtype is None:
                raise NotAWeightsFile(f"{name}: weight {key} has a dtype this loader does not read")
            data = bytearray(archive.read(f"{root}data/weights/{entry['path_name']}"))
            flat = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            sizes = [s["as_int"] for s in meta["sizes"]]
            strides = [s["as_int"] for s in meta["strides"]]
            offset = meta["storage_offset"]["as_int"]
            weights[key] = torch.as_strided(flat, sizes, strides, offset).clone()
        extra = {
            n[len(root) + len("extra/") :]: archive.read(n).decode("utf-8")
            for n in names
            if n.startswith(f"{root}extra/")
        }
    return weights, extra


def check_weights_files(files: dict[str, str]) -> None:
    """Read each of a config's weights files (parameter -> path or URI) as weights only:
    ``ValueError`` naming the parameter for one that is missing, unreadable, holds no weights or
    would run code. Nothing of a file runs."""
    for name, source in files.items():
        try:
            load_weights(read_bytes(source), name=str(source))
        except (UnsafeFile, NotAWeightsFile) as exc:
            raise ValueError(f"{name}: {exc}") from None
        except OSError as exc:
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise ValueError(f"{name}: cannot read {source} ({reason})") from None


def read_bytes(source: str | os.PathLike) -> bytes:
    """A local path's or a pyarrow URI's (``s3://...``) bytes."""
    text = str(source)
    if "://" in text:
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(text)
        with fs.open_input_file(path) as f:
            return f.read()
    return Path(text).read_bytes()
