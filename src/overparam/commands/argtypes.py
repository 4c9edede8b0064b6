"""Argument types shared by the CLI and its commands: bounded integers and numbers, one-line errors."""

from __future__ import annotations

import argparse
import math

from overparam.config import INT_LIMIT, SEED_MAX


def _int_between(low: int, high: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:60]!r}") from None
        if not low <= value <= high:
            shown = text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"
            raise argparse.ArgumentTypeError(f"expected {what}, got {shown}")
        return value

    return parse


def _float_where(ok, what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} number, got {text[:60]!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected a finite {what} number, got {text[:60]}")
        return value

    return parse


positive_int = _int_between(1, INT_LIMIT, "a positive integer")
nonneg_int = _int_between(0, INT_LIMIT, "a non-negative integer")
seed_int = _int_between(0, SEED_MAX, "a seed: a non-negative integer below 2**63")
seed_count = _int_between(1, 100_000, "a number of seeds in [1, 100000]")
thread_count = _int_between(1, 1024, "a number of threads in [1, 1024]")
positive_float = _float_where(lambda v: v > 0, "positive")
nonneg_float = _float_where(lambda v: v >= 0, "non-negative")


def float_in(low: float, high: float, low_open: bool = False):
    """A finite number in [low, high] (or (low, high] with low_open)."""
    what = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    return _float_where(lambda v: (v > low if low_open else v >= low) and v <= high, f"in {what}")
