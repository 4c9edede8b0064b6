"""Validation of user-supplied options, each failure a one-line DataError."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from .errors import DataError


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int in [low, high]; bools are rejected (True is not a size)."""
    allowed = _int_range_text(low, high)
    if isinstance(value, str):  # option values typed on a command line arrive as text
        try:
            value = int(value.strip())
        except ValueError:
            raise DataError(f"{name} must be {allowed}, got {value!r}") from None
    # numbers.Integral admits numpy integers; a float such as 2.0 is refused rather than guessed at
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{name} must be {allowed}, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise DataError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float within the given (closed unless *_open) bounds."""
    allowed = _number_range_text(low, high, low_open, high_open)
    if isinstance(value, bool):
        raise DataError(f"{name} must be {allowed}, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{name} must be {allowed}, got {value!r}") from None
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or too_low or too_high:
        raise DataError(f"{name} must be {allowed}, got {value!r}")
    return number


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    """Return ``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise DataError(f"{name} must be one of: {listed}; got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` as a bool; accepts the usual command-line spellings of true/false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise DataError(f"{name} must be true or false, got {value!r}")


_TRUE_WORDS = {"true", "yes", "1", "on"}
_FALSE_WORDS = {"false", "no", "0", "off"}


def _int_range_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"an integer in [{low}, {high}]"
    if low is not None:
        return f"an integer >= {low}"
    if high is not None:
        return f"an integer <= {high}"
    return "an integer"


def _number_range_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a number {'<' if high_open else '<='} {high:g}"
    return "a finite number"
