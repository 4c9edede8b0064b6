"""Argument types shared by the CLI and its commands: bounded integers and numbers, one-line errors."""

from __future__ import annotations

import argparse
import math


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        return value

    return parse


def _float_where(ok, what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} number, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected a {what} number, got {text}")
        return value

    return parse


positive_int = _int_at_least(1, "positive")
nonneg_int = _int_at_least(0, "non-negative")
positive_float = _float_where(lambda v: v > 0, "positive")
nonneg_float = _float_where(lambda v: v >= 0, "non-negative")
