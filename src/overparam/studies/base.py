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
from pathlib import Path
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


DIGITS_TRAIN, DIGITS_TEST = 1257, 540  # training and test images of sklearn's digits in our split

# Upper bounds shared by the study configs' keys; the memory check (peak_bytes) refines them per run.
MAX_EXAMPLES = 1_000_000    # training or test examples, and batch sizes
MAX_WIDTH = 65_536          # hidden units of one layer
MAX_STEPS = 10_000_000      # optimizer steps and other step counts
MAX_EPOCHS = 100_000        # passes over the training set


def check_data_keys(dataset: str | list[str], data_dir: str, n_train: int | None = None,
                    key: str = "n_train", n_test: int | None = None) -> None:
    """The data checks the study configs share: MNIST needs its files, there before anything runs, with as
    many images as asked for; a data_dir that no dataset of the run reads is an error, not ignored; digits
    has only so many images."""
    from overparam.config import ConfigError
    from overparam.data import DataError, check_source
    from overparam.data.idx import mnist_sizes

    names = [dataset] if isinstance(dataset, str) else list(dataset)
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise ConfigError(f"data_dir: folder not found: {data_dir}")
    if "mnist" in names:
        if not data_dir:
            raise ConfigError("data_dir: dataset=mnist needs --data-dir pointing at MNIST IDX files")
        try:
            check_source("mnist", data_dir)
            have_train, have_test = mnist_sizes(data_dir)
        except DataError as exc:
            raise ConfigError(str(exc)) from None
        for name, asked, have in ((key, n_train, have_train), ("n_test", n_test, have_test)):
            if asked is not None and asked > have:
                raise ConfigError(f"{name}: the MNIST files in {data_dir} hold {have} "
                                  f"{'training' if name != 'n_test' else 'test'} images, fewer than {asked}")
    elif data_dir:
        raise ConfigError(f"data_dir: only dataset mnist reads files, and this run uses {', '.join(names)}; "
                          "choose dataset=mnist or leave data_dir out")
    if "digits" in names and n_train is not None and n_train > DIGITS_TRAIN:
        raise ConfigError(f"{key}: digits has {DIGITS_TRAIN} training images")
    if "digits" in names and n_test is not None and n_test > DIGITS_TEST:
        raise ConfigError(f"n_test: digits has {DIGITS_TEST} test images")


# ---------------------------------------------------------------- memory estimates (StudyConfig.peak_bytes)

FLOAT32, FLOAT64 = 4, 8

# dataset: (input features, classes, default training examples, default test examples)
DATASET_SHAPES = {"mnist1d": (40, 10, 4000, 1000), "digits": (64, 10, 1257, 540), "mnist": (784, 10, 60000, 10000)}


def data_bytes(name: str, n_train: int | None = None, n_test: int | None = None, copies: int = 2,
               train_key: str = "n_train", test_key: str = "n_test") -> dict[str, float]:
    """The inputs of a dataset's two splits in float32, ``copies`` times (as loaded, and a converted or
    corrupted copy), keyed by the config keys that size them. Files (mnist, digits) are read whole."""
    d, _, default_train, default_test = DATASET_SHAPES[name]
    n_train = default_train if n_train is None else n_train
    n_test = default_test if n_test is None else n_test
    if name != "mnist1d":
        n_train, n_test = max(n_train, default_train), max(n_test, default_test)
    return {train_key: float(copies) * FLOAT32 * d * n_train, test_key: float(copies) * FLOAT32 * d * n_test}


def mlp_training_bytes(replicas: int, n_in: int, hidden: list[int], n_out: int, batch: int,
                       itemsize: int = FLOAT32) -> float:
    """Replicas of an MLP in training: weights, gradients and two optimizer moments, and the activations of
    one batch kept for the backward pass."""
    from overparam.models import mlp_parameter_count

    params = mlp_parameter_count(n_in, hidden, n_out)
    return float(replicas) * itemsize * (4 * params + 3 * batch * (sum(hidden) + n_out))


def training_batch(optimizer: str, batch_size: int, n: int) -> int:
    """Examples per step: the whole training set for full-batch gradient descent (or batch_size 0)."""
    return n if optimizer == "gd" or batch_size == 0 else min(batch_size, n)


def fmt(x: float, digits: int = 3) -> str:
    """Numbers in check tables: fixed digits, and NaN spelled out."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (0 < abs(x) < 1e-3) else f"{x:.{digits}f}".rstrip("0").rstrip(".")
