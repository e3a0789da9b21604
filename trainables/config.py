"""Trial configs: a config dict becomes a validated, frozen dataclass.

Every trainable declares its hyperparameters as a frozen dataclass whose fields carry their valid
range or choices. ``Config.from_dict`` rejects unknown keys (suggesting the closest valid one),
coerces strings and floats coming from a CLI or a searcher, and checks every range, so a
misspelled key or an out-of-range value fails before any data is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config dict that does not describe a valid trial."""


def param(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[Any, ...] | None = None,
    doc: str = "",
    weights: bool = False,
) -> Any:
    """A dataclass field with its valid range (inclusive) or choices and a one-line doc.
    ``weights``: a path or URI of a weights file the trial loads, which commands read once, as
    weights only, before any work starts (:meth:`Config.weights_files`)."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc, "weights": weights}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            as_float = float(text)
            if as_float.is_integer():
                return int(as_float)
    if hasattr(value, "item"):  # numpy / torch scalars from a searcher
        return _parse_int(value.item())
    raise ValueError(f"expected an integer, got {value!r}")


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    if hasattr(value, "item"):
        return float(value.item())
    raise ValueError(f"expected a number, got {value!r}")


def _split_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        text = value.strip().strip("()[]")
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"expected a list, got {value!r}")


def _parse_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.replace(":", " ").split()
    else:
        parts = list(value)
    if len(parts) != 2:
        raise ValueError(f"expected a pair 'a:b', got {value!r}")
    return _parse_int(parts[0]), _parse_int(parts[1])


def _coerce(value: Any, annotation: Any) -> Any:
    """Coerce ``value`` to the field type (the small set of types configs use)."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return _parse_bool(value)
    if annotation is int:
        return _parse_int(value)
    if annotation is float:
        return _parse_float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(annotation)
        inner = args[0]
        if typing.get_origin(inner) is tuple:  # tuple[tuple[int, int], ...]
            if isinstance(value, str):
                items = [p.strip() for p in value.split(",") if p.strip()]
            else:
                items = list(value)
            return tuple(_parse_pair(item) for item in items)
        return tuple(_coerce(item, inner) for item in _split_items(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config annotation {annotation!r}")
    raise TypeError(f"unsupported config annotation {annotation!r}")


def _check_range(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")
    lo, hi = meta.get("lo"), meta.get("hi")
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if isinstance(item, (tuple, bool)) or item is None:
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{name}={item!r} is not finite")
        if lo is not None and item < lo:
            raise ValueError(f"{name}={item!r} is below its minimum {lo}")
        if hi is not None and item > hi:
            raise ValueError(f"{name}={item!r} is above its maximum {hi}")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: ``from_dict`` validation, ``to_dict`` and a parameter table."""

    #: Name of the trainable, used in error messages.
    trainable: ClassVar[str] = "config"

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None = None) -> C:
        """Validate ``values`` (unknown keys, types, ranges) and build the frozen config."""
        values = dict(values or {})
        types_ = cls.field_types()
        unknown = sorted(set(values) - set(types_))
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, list(types_), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{cls.trainable}: unknown config key '{key}'{hint}")
        kwargs = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, raw in values.items():
            try:
                value = _coerce(raw, types_[name])
                _check_range(name, value, fields[name].metadata)
            except ValueError as exc:
                message = str(exc)
                if not message.startswith(name):
                    message = f"{name}: {message}"
                raise ConfigError(f"{cls.trainable}: {message}") from None
            kwargs[name] = value
        config = cls(**kwargs)
        try:
            config.validate()
        except ValueError as exc:
            raise ConfigError(f"{cls.trainable}: {exc}") from None
        return config

    def validate(self) -> None:
        """Cross-field checks; subclasses extend this and raise ``ValueError``."""
        for f in dataclasses.fields(self):
            _check_range(f.name, getattr(self, f.name), f.metadata)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def weights_files(self) -> dict[str, str]:
        """The weights files this config names (parameter -> path or URI), set ones only."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("weights") and getattr(self, f.name)
        }

    def replace(self: C, **changes: Any) -> C:
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One row per parameter: name, type, default, range or choices, doc."""
        rows = []
        types_ = cls.field_types()
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if meta.get("choices") is not None:
                valid = "|".join(map(str, meta["choices"]))
            elif meta.get("lo") is not None or meta.get("hi") is not None:
                valid = f"[{meta.get('lo')}, {meta.get('hi')}]"
            else:
                valid = ""
            rows.append(
                {
                    "name": f.name,
                    "type": getattr(types_[f.name], "__name__", str(types_[f.name])),
                    "default": f.default,
                    "valid": valid,
                    "doc": meta.get("doc", ""),
                }
            )
        return rows
