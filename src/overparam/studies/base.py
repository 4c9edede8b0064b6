"""What a study is: a typed config with presets, a `run()`, figures drawn from its arrays, and checks.

Studies register themselves in :data:`REGISTRY`; the CLI and the tour only ever go through it.
A study's ``run(cfg, ctx)`` returns a :class:`StudyResult` (metrics, arrays, checks that carry their numbers,
:mod:`overparam.studies.checks`); its ``figures(arrays, cfg)`` draws every figure from the stored arrays, so a
report can be redrawn without rerunning. A study never writes files, never sets process-wide state (the runner
sets torch's threads to ``Study.threads`` for the run and restores them) -- the runner hands the result to the
store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from overparam.train.progress import SILENT, Progress


@dataclass
class LegacyCheck:
    """A check with its verdict and text typed in (studies not yet moved to :class:`checks.Check`)."""

    name: str
    expected: str
    measured: str
    passed: bool
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "expected": self.expected, "measured": self.measured,
                "passed": bool(self.passed), "source": self.source}


Check = LegacyCheck  # the name unmigrated studies import


@dataclass
class StudyResult:
    metrics: dict[str, Any]
    checks: list[Any] = field(default_factory=list)             # checks.Check (numbers) or LegacyCheck
    arrays: dict[str, Any] = field(default_factory=dict)       # name -> np.ndarray, saved in arrays.npz
    figures: dict[str, Any] = field(default_factory=dict)      # studies without figures(): name -> Figure
    status: str = "done"                                       # or "diverged"
    notes: str = ""                                            # what the run shows, in a sentence or two


@dataclass
class RunContext:
    """What a running study may use besides its config: progress bars and the user's data folder."""

    progress: Progress = SILENT
    data_dir: str | None = None


@dataclass
class Study:
    name: str
    description: str
    paper: str
    config: type
    presets: dict[str, dict[str, Any]]
    run: Callable[[Any, RunContext], StudyResult]
    version: int = 1   # bump when results change for a reason the code fingerprint cannot see (data files)
    figures: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None   # (arrays, cfg) -> name -> Figure
    threads: int | None = None   # torch threads for the run (1 for small models: per-op overhead dominates)

    @property
    def fingerprint(self) -> str:
        """A hash of the code this study runs (its module and the overparam modules it uses)."""
        from overparam.studies.fingerprint import fingerprint

        return fingerprint(self.run.__module__)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "paper": self.paper,
                "presets": list(self.presets)}


REGISTRY: dict[str, Study] = {}


def register(study: Study) -> Study:
    if study.name in REGISTRY:
        raise ValueError(f"study {study.name!r} registered twice")
    for required in ("quick", "paper"):
        if required not in study.presets:
            raise ValueError(f"study {study.name!r} lacks the {required!r} preset")
    REGISTRY[study.name] = study
    return study


DIGITS_TRAIN = 1257  # training images of sklearn's digits in our split


def check_data_keys(dataset: str, data_dir: str, n_train: int | None = None, key: str = "n_train") -> None:
    """The data checks most study configs share: MNIST needs its files; digits has only so many images."""
    from overparam.config import ConfigError

    if dataset == "mnist" and not data_dir:
        raise ConfigError("data_dir: dataset=mnist needs --data-dir pointing at MNIST IDX files")
    if dataset == "digits" and n_train is not None and n_train > DIGITS_TRAIN:
        raise ConfigError(f"{key}: digits has {DIGITS_TRAIN} training images")


def fmt(x: float, digits: int = 3) -> str:
    """Numbers in check tables: fixed digits, and NaN spelled out."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (0 < abs(x) < 1e-3) else f"{x:.{digits}f}".rstrip("0").rstrip(".")
