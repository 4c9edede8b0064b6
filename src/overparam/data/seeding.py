"""Seed handling: independent named random streams, and shielding global RNG state."""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .checks import check_int


def check_seed(seed: object) -> int:
    return check_int("seed", seed, low=0)


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """A numpy Generator for one named purpose ("train", "test", "centers", ...) under ``seed``.

    Separate streams keep parts of a dataset independent of each other's sizes: asking for a
    bigger test set must not change the training set drawn from the same seed.
    """
    # crc32 is stable across processes, unlike hash(str), so streams are reproducible.
    return np.random.default_rng([check_seed(seed), zlib.crc32(stream.encode())])


def derive_seed(seed: int, stream: str) -> int:
    """An integer seed for APIs that want one (e.g. sklearn's random_state), from a named stream."""
    return int(rng_for(seed, stream).integers(0, 2**31 - 1))


@contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Run a block that reseeds numpy's and python's global RNGs, then put both back.

    Third-party generators (mnist1d) call np.random.seed / random.seed; without this they
    would silently change the random state of whatever code called the data layer.
    """
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
