"""Typed study configs: dataclass fields with ranges, presets, and `key=value` overrides.

A config is a dataclass whose fields are declared with :func:`param`, so every key carries its type,
its allowed range or choices, and a help line. A config checks itself when it is constructed, from
Python as from the command line: every value is coerced to its field's type and must lie in its range
(integers below 2**63, floats finite, lists of at most ``max_len`` items), then the class's
``validate()`` checks the rules that tie keys together. Everything a user types (``--set``, a TOML or
JSON file, a preset) goes through :func:`resolve_config`, which also refuses a config whose estimated
peak memory (the class's ``peak_bytes()``) exceeds the machine's available memory. Every failure is a
:class:`ConfigError`: one line naming the key and what is allowed -- before anything runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from overparam import resources
from overparam.resources import MEMORY_ENV, format_bytes  # noqa: F401  (re-exported for configs and tests)


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one line naming the key."""


SEED_MAX = 2**63 - 1        # seeds are int64 for torch and numpy
INT_LIMIT = 2**63 - 1       # no integer key holds more, whatever its own range says
MAX_LIST_LENGTH = 1000      # list-valued keys (grids of widths, ratios, ...) hold at most this many items


def param(default: Any, help: str = "", *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None, max_len: int = MAX_LIST_LENGTH) -> Any:
    """A config field with a help line and an allowed range (inclusive) or a set of choices.

    ``max_len`` bounds the number of items of a list-valued field."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "max_len": max_len}
    if isinstance(default, (list, dict, set)):
        frozen = tuple(default) if not isinstance(default, dict) else default
        return dataclasses.field(default_factory=lambda: list(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class StudyConfig:
    """Base of every study's config: the seed that makes a run reproducible.

    Constructing a config checks it (:func:`check_fields`, then ``validate()``), so
    ``SomeConfig(epochs=-1)`` raises the same one-line :class:`ConfigError` as ``--set epochs=-1``.
    Subclasses override ``validate()`` for rules between keys, and ``peak_bytes()`` when their memory
    grows with the config.
    """

    seed: int = param(0, "seed of every random choice in the run", min=0, max=SEED_MAX)

    def __post_init__(self) -> None:
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        """Rules between keys; raise ConfigError naming the key to change."""

    def peak_bytes(self) -> dict[str, float]:
        """The largest arrays of a run, in bytes, keyed by the config key to lower to shrink each.

        A cheap estimate (data, the widest models, Gram matrices, grids), compared with the machine's
        available memory by :func:`check_memory`. Studies whose memory does not grow with the config
        keep this empty default."""
        return {}


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(cfg: Any) -> None:
    """Coerce every field of a config instance to its declared type and check its range, in place."""
    known = fields_of(type(cfg))
    hints = _hints(type(cfg))
    for key, f in known.items():
        raw = getattr(cfg, key)
        value = _coerce_or_fail(key, f, hints[key], raw, "")
        _check_range(key, f, value)
        setattr(cfg, key, value)


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
        if isinstance(value, numbers.Integral):   # numpy integers too
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:  # 1e3 is an integer too, as it is in a TOML file
                number = float(text)
                if number.is_integer():
                    return int(number)
                raise
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, numbers.Real):
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


def _coerce_or_fail(key: str, field: dataclasses.Field, tp: Any, raw: Any, origin: str) -> Any:
    try:
        return _coerce(key, tp, raw)
    except (ValueError, TypeError, OverflowError, json.JSONDecodeError):
        where = f" (from {origin})" if origin else ""
        raise ConfigError(f"{key}: cannot read {_show(raw)} as {allowed_text(field, tp)}{where}") from None


def _show(value: Any) -> str:
    """A value for an error line: short, whatever its size."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**16:
        try:
            return f"{value:.2e}"
        except OverflowError:  # beyond float: the digit count is what matters
            return f"{'-' if value < 0 else ''}{str(abs(value))[0]}e+{len(str(abs(value))) - 1}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_range(key: str, field: dataclasses.Field, value: Any) -> None:
    meta = field.metadata
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{key}: must not be empty")
        longest = meta.get("max_len", MAX_LIST_LENGTH)
        if len(value) > longest:
            raise ConfigError(f"{key}: {len(value)} values; allowed at most {longest}")
    for v in items:
        if v is None:
            continue
        if meta.get("choices") is not None and v not in meta["choices"]:
            allowed = ", ".join(map(str, meta["choices"]))
            raise ConfigError(f"{key}: {_show(v)} is not allowed; choose one of: {allowed}")
        lo, hi = meta.get("min"), meta.get("max")
        if isinstance(v, float):
            if v != v:
                raise ConfigError(f"{key}: NaN is not allowed; give a finite number")
            if not math.isfinite(v):
                raise ConfigError(f"{key}: {v} is not allowed; give a finite number"
                                  + (f" ({_range_text(lo, hi)})" if lo is not None or hi is not None else ""))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if isinstance(v, int):  # int64 at most, whatever the field's own range says
                lo = -INT_LIMIT - 1 if lo is None else lo
                hi = INT_LIMIT if hi is None else hi
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(f"{key}: {_show(v)} is out of range; allowed {_range_text(lo, hi)}")


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
    hints = _hints(cls)
    merged = dict(values)
    for key, raw in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown key {_show(key)} in {origin}; allowed keys: {', '.join(sorted(known))}")
        value = _coerce_or_fail(key, known[key], hints[key], raw, origin)
        _check_range(key, known[key], value)
        merged[key] = value
    return merged


def parse_set(items: list[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from the command line."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {_show(item)}")
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
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'TOML'}: "
                          f"{' '.join(str(exc).split())[:200]}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
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
    cfg = cls(**values)  # checks every field and the class's cross-field rules
    check_memory(cfg)
    return cfg


def available_memory() -> int | None:
    """Host memory a new run may take (see :func:`overparam.resources.available_memory`)."""
    try:
        return resources.available_memory()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_memory(cfg: Any, available: int | None = None) -> None:
    """Refuse a config whose estimated peak memory exceeds what the machine has available.

    The message names the key behind the largest part of the estimate: lowering it helps most."""
    terms = {key: float(b) for key, b in cfg.peak_bytes().items()} if hasattr(cfg, "peak_bytes") else {}
    needed = sum(terms.values())
    if not terms:
        return
    available = available_memory() if available is None else available
    if available is None or needed <= available:
        return
    key = max(terms, key=terms.get)
    raise ConfigError(f"{key}: this run needs about {format_bytes(needed)} of memory, more than the "
                      f"{format_bytes(available)} available; lower {key}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def describe_config(cls: type) -> list[dict[str, Any]]:
    """One row per key: name, default, allowed values, help -- for `overparam studies --json` and docs."""
    hints = _hints(cls)
    rows = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        rows.append({"key": f.name, "default": getattr(defaults, f.name),
                     "allowed": allowed_text(f, hints[f.name]), "help": f.metadata.get("help", "")})
    return rows
