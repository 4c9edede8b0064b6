"""Config keys shared by many studies, declared once: their meaning, help text and allowed range.

A study keeps its own defaults and composes these instead of repeating ``param(...)``::

    @dataclass
    class MyConfig(StudyConfig):
        dataset: str = keys.dataset("mnist1d")
        n_train: int | None = keys.n_train(None)
        lr: float = keys.lr(0.01)
        widths: list[int] = keys.widths([8, 16, 32])

        def validate(self):
            keys.strictly_increasing("widths", self.widths)

A factory's ``help=`` replaces the generic help line where the study's meaning is narrower.
"""

from __future__ import annotations

from typing import Any, Sequence

from overparam.config import ConfigError, param
from overparam.studies.base import MAX_EPOCHS, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH

DATASETS = ("mnist1d", "digits", "mnist")


def _help(default_help: str, help: str | None) -> str:
    return help if help is not None else default_help


# -- data ---------------------------------------------------------------------------------------------
def dataset(default: str = "mnist1d", choices: Sequence[str] = DATASETS, help: str | None = None) -> Any:
    return param(default, _help("training data", help), choices=tuple(choices))


def data_dir(help: str | None = None) -> Any:
    return param("", _help("folder of MNIST IDX files (dataset=mnist)", help))


def n_train(default: int | None = None, min: int = 10, help: str | None = None) -> Any:
    return param(default, _help("training examples" + (" (none: the dataset's default)" if default is None else ""),
                                help), min=min, max=MAX_EXAMPLES)


def n_test(default: int | None = None, min: int = 10, help: str | None = None) -> Any:
    return param(default, _help("test examples" + (" (none: the dataset's default)" if default is None else ""),
                                help), min=min, max=MAX_EXAMPLES)


def label_noise(default: float = 0.0, help: str | None = None) -> Any:
    return param(default, _help("fraction of training labels replaced by a different label", help),
                 min=0.0, max=1.0)


# -- models -------------------------------------------------------------------------------------------
def width(default: int, min: int = 1, max: int = MAX_WIDTH, help: str | None = None) -> Any:
    return param(default, _help("hidden width of the MLP", help), min=min, max=max)


def widths(default: list[int], min: int = 1, max: int = MAX_WIDTH, help: str | None = None) -> Any:
    return param(default, _help("hidden widths h of the in-h-h-out MLPs", help), min=min, max=max)


def depth(default: int = 2, max: int = 8, help: str | None = None) -> Any:
    return param(default, _help("number of hidden layers", help), min=1, max=max)


# -- training -----------------------------------------------------------------------------------------
def optimizer(default: str = "sgd", choices: Sequence[str] = ("sgd", "adam", "gd"), help: str | None = None) -> Any:
    return param(default, _help("sgd (minibatch, momentum), adam, or gd (full batch)", help), choices=tuple(choices))


def lr(default: float, min: float = 1e-8, max: float = 10.0, help: str | None = None) -> Any:
    return param(default, _help("learning rate", help), min=min, max=max)


def momentum(default: float = 0.9, help: str | None = None) -> Any:
    return param(default, _help("SGD momentum (optimizer=sgd)", help), min=0.0, max=0.999)


def weight_decay(default: float = 0.0, max: float = 10.0, help: str | None = None) -> Any:
    return param(default, _help("L2 weight decay", help), min=0.0, max=max)


def batch_size(default: int = 100, help: str | None = None) -> Any:
    return param(default, _help("minibatch size", help), min=1, max=MAX_EXAMPLES)


def epochs(default: int, min: int = 1, max: int = MAX_EPOCHS, help: str | None = None) -> Any:
    return param(default, _help("passes over the training set", help), min=min, max=max)


def steps(default: int, min: int = 1, max: int = MAX_STEPS, help: str | None = None) -> Any:
    return param(default, _help("optimizer steps", help), min=min, max=max)


def seeds(default: int, min: int = 1, max: int = 64, help: str | None = None) -> Any:
    return param(default, _help("initializations (and data orders), trained as one stacked ensemble", help),
                 min=min, max=max)


# -- rules between values -----------------------------------------------------------------------------
def strictly_increasing(key: str, values: Sequence[float]) -> None:
    """A grid that must go up (widths, sizes, ratios): one line naming the key otherwise."""
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(f"{key}: values must be strictly increasing, got {list(values)}")


def at_least(key: str, values: Sequence[Any], count: int, why: str) -> None:
    """A list that needs ``count`` values to show anything (a peak needs 3 widths)."""
    if len(values) < count:
        raise ConfigError(f"{key}: need at least {count} values {why}, got {len(values)}")
