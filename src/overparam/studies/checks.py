"""Checks against the literature that carry their numbers: the verdict and the sentence come from them.

A :class:`Check` stores what was measured, what the paper leads us to expect (a threshold, an interval, a
value with a tolerance, or a trend), the comparison and the unit. ``passed`` is computed from those numbers,
never typed in, so the text and the verdict cannot disagree, and ``results.json`` holds the numbers::

    Check("LB minima are sharper", measured=lb_sharpness, comparison=">", expected=sb_sharpness,
          what="mean sharpness of LB", reference="mean sharpness of SB", source="Keskar et al. 2016, Table 3")

A check whose premise did not hold (a target never reached, too few points to rank) is ``valid=False`` with
the reason in ``invalid``: it fails, and says why, instead of passing vacuously.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

COMPARISONS = ("<", "<=", ">", ">=", "in", "~", "increasing", "decreasing")
_SYMBOL = {"<": "<", "<=": "≤", ">": ">", ">=": "≥", "in": "in", "~": "≈"}


def fmt(x: Any, digits: int = 3) -> str:
    """Numbers in check tables: ``digits`` significant figures, NaN spelled out."""
    if x is None:
        return "none"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt(v, digits) for v in x) + "]"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.{digits}g}"
    text = f"{x:.{max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _finite(values: Sequence[float]) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


@dataclass
class Check:
    """One comparison of a measured number (or sequence) with a published expectation."""

    name: str
    measured: float | Sequence[float]
    comparison: str
    expected: float | tuple[float, float] | None = None
    source: str = ""
    unit: str = ""
    tolerance: float = 0.0        # "~": relative tolerance; trends: the largest step allowed against the trend
    what: str = ""                # what the measured number is ("Spearman rho of steps vs noise")
    reference: str = ""           # what the expected number is, when it is itself measured ("SB sharpness")
    detail: str = ""              # context that does not decide the verdict
    valid: bool = True
    invalid: str = ""             # why the check could not be made (valid=False)
    passed: bool = field(init=False)

    def __post_init__(self):
        if self.comparison not in COMPARISONS:
            raise ValueError(f"check {self.name!r}: comparison {self.comparison!r} is not one of {COMPARISONS}")
        trend = self.comparison in ("increasing", "decreasing")
        if trend != isinstance(self.measured, (list, tuple)):
            raise ValueError(f"check {self.name!r}: a trend compares a sequence, the others one number")
        if self.comparison == "in" and not (isinstance(self.expected, (list, tuple)) and len(self.expected) == 2):
            raise ValueError(f"check {self.name!r}: 'in' needs expected=(low, high)")
        if not trend and self.comparison != "in" and self.expected is None:
            raise ValueError(f"check {self.name!r}: {self.comparison!r} needs an expected value")
        if not self.valid and not self.invalid:
            raise ValueError(f"check {self.name!r}: say why it could not be made (invalid=...)")
        self.measured = [float(v) for v in self.measured] if trend else float(self.measured)
        if isinstance(self.expected, (list, tuple)):
            self.expected = (float(self.expected[0]), float(self.expected[1]))
        elif self.expected is not None:
            self.expected = float(self.expected)
        self.passed = bool(self.valid and self._holds())

    def _holds(self) -> bool:
        m, e, c = self.measured, self.expected, self.comparison
        if c in ("increasing", "decreasing"):
            if len(m) < 2 or not _finite(m):
                return False
            sign = 1 if c == "increasing" else -1
            return all(sign * (b - a) > -self.tolerance for a, b in zip(m, m[1:])) and sign * (m[-1] - m[0]) > 0
        values = [m] + (list(e) if isinstance(e, tuple) else [e])
        if not _finite(values):
            return False
        if c == "in":
            return e[0] <= m <= e[1]
        if c == "~":
            return abs(m - e) <= self.tolerance * abs(e)
        return {"<": m < e, "<=": m <= e, ">": m > e, ">=": m >= e}[c]

    # -- words, generated from the numbers ----------------------------------------------------------------
    def expected_text(self) -> str:
        u = f" {self.unit}" if self.unit else ""
        c = self.comparison
        if c in ("increasing", "decreasing"):
            slack = f" (steps against it up to {fmt(self.tolerance)})" if self.tolerance else ""
            return f"{c} over the sequence{slack}"
        if c == "in":
            text = f"in [{fmt(self.expected[0])}, {fmt(self.expected[1])}]{u}"
        elif c == "~":
            text = f"≈ {fmt(self.expected)}{u} (within {fmt(100 * self.tolerance)}%)"
        else:
            text = f"{_SYMBOL[c]} {fmt(self.expected)}{u}"
        return f"{text}, the {self.reference}" if self.reference else text

    def measured_text(self) -> str:
        u = f" {self.unit}" if self.unit and not isinstance(self.measured, list) else ""
        text = f"{self.what + ' ' if self.what else ''}{fmt(self.measured)}{u}"
        if not self.valid:
            text += f" (not measurable: {self.invalid})"
        return text + (f"; {self.detail}" if self.detail else "")

    def sentence(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return f"{self.name}: measured {self.measured_text()}; expected {self.expected_text()} — {verdict}"

    def to_dict(self) -> dict[str, Any]:
        """The check for results.json: the numbers and the text generated from them."""
        return {"name": self.name, "passed": self.passed, "source": self.source,
                "expected": self.expected_text(), "measured": self.measured_text(), "sentence": self.sentence(),
                "comparison": self.comparison, "measured_value": self.measured,
                "expected_value": list(self.expected) if isinstance(self.expected, tuple) else self.expected,
                "unit": self.unit, "tolerance": self.tolerance, "valid": self.valid}
