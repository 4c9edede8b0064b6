"""Typed study configs: dataclass fields with ranges, presets, and `key=value` overrides.

A config is a frozen dataclass whose fields are declared with :func:`param`, so every key carries
its type, its allowed range or choices, and a help line. Everything a user types (``--set``,
a TOML file, a preset) goes through :func:`resolve_config`, which either returns a fully validated
config or raises :class:`ConfigError` naming the key and what is allowed -- before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one line naming the key."""


def param(default: Any, help: str = "", *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None) -> Any:
    """A config field with a help line and an allowed range (inclusive) or a set of choices."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    if isinstance(default, (list, dict, set)):
        frozen = tuple(default) if not isinstance(default, dict) else default
        return dataclasses.field(default_factory=lambda: list(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class StudyConfig:
    """Base of every study's config: the seed that makes a run reproducible."""

    seed: int = param(0, "seed of every random choice in the run", min=0)


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(arg)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce_scalar(key: str, tp: Any, value: Any) -> Any:
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        raise ValueError
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _coerce(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in sorted(typing.get_args(tp), key=lambda a: a is str):  # try str last
            try:
                return _coerce(key, arg, value)
            except (ValueError, TypeError):
                continue
        raise ValueError
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(tp) or (str,)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [_coerce(key, arg, v) for v in value]
    return _coerce_scalar(key, tp, value)


def _check_range(key: str, field: dataclasses.Field, value: Any) -> None:
    meta = field.metadata
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise ConfigError(f"{key}: must not be empty")
    for v in items:
        if v is None:
            continue
        if meta.get("choices") is not None and v not in meta["choices"]:
            allowed = ", ".join(map(str, meta["choices"]))
            raise ConfigError(f"{key}: {v!r} is not allowed; choose one of: {allowed}")
        lo, hi = meta.get("min"), meta.get("max")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if v != v:  # NaN
                raise ConfigError(f"{key}: NaN is not allowed")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(f"{key}: {v} is out of range; allowed {_range_text(lo, hi)}")


def _range_text(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"{lo} <= value <= {hi}"
    return f"value >= {lo}" if lo is not None else f"value <= {hi}"


def allowed_text(field: dataclasses.Field, tp: Any) -> str:
    """What a field accepts, in words, for help texts and errors."""
    meta = field.metadata
    if meta.get("choices") is not None:
        return "one of " + ", ".join(map(str, meta["choices"]))
    text = _type_name(tp)
    if meta.get("min") is not None or meta.get("max") is not None:
        text += f" ({_range_text(meta.get('min'), meta.get('max'))})"
    return text


def apply_overrides(cls: type, values: dict[str, Any], overrides: dict[str, Any], origin: str) -> dict[str, Any]:
    """Merge overrides into values, coercing each to the field's type; unknown keys are errors."""
    known = fields_of(cls)
    hints = typing.get_type_hints(cls)
    merged = dict(values)
    for key, raw in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in {origin}; allowed keys: {', '.join(sorted(known))}")
        try:
            value = _coerce(key, hints[key], raw)
        except (ValueError, TypeError, json.JSONDecodeError):
            raise ConfigError(
                f"{key}: cannot read {raw!r} as {allowed_text(known[key], hints[key])} (from {origin})"
            ) from None
        _check_range(key, known[key], value)
        merged[key] = value
    return merged


def parse_set(items: list[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from the command line."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of key = value pairs")
    return data


def resolve_config(cls: type, presets: dict[str, dict[str, Any]], preset: str = "quick",
                   file_values: dict[str, Any] | None = None, sets: dict[str, Any] | None = None,
                   seed: int | None = None):
    """defaults < preset < config file < --set < --seed. Returns a validated config instance."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    values: dict[str, Any] = {}
    values = apply_overrides(cls, values, presets[preset], f"preset {preset!r}")
    if file_values:
        values = apply_overrides(cls, values, file_values, "config file")
    if sets:
        values = apply_overrides(cls, values, sets, "--set")
    if seed is not None:
        values = apply_overrides(cls, values, {"seed": seed}, "--seed")
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()  # cross-field rules, raising ConfigError
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def describe_config(cls: type) -> list[dict[str, Any]]:
    """One row per key: name, default, allowed values, help -- for `overparam studies --json` and docs."""
    hints = typing.get_type_hints(cls)
    rows = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        rows.append({"key": f.name, "default": getattr(defaults, f.name),
                     "allowed": allowed_text(f, hints[f.name]), "help": f.metadata.get("help", "")})
    return rows
