"""One-dimensional regression benchmarks on x in [0, 1]: Doppler and a piecewise function.

Both are classic tests of spatially varying smoothness (Donoho & Johnstone 1994): a good
estimator must be flexible where the function wiggles and smooth where it does not. The clean
target functions are public so studies can compute the true (noise-free) error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .checks import check_choice, check_number
from .dataset import Dataset
from .seeding import rng_for

ArrayLike = float | np.ndarray | torch.Tensor

DOPPLER_EPS = 0.05


def doppler(x: ArrayLike) -> ArrayLike:
    """Donoho–Johnstone Doppler: sqrt(x(1-x)) * sin(2*pi*(1+eps)/(x+eps)), eps = 0.05.

    Accepts a float, numpy array or tensor and answers in kind (tensors keep their dtype).
    """
    return _in_kind(x, _doppler_numpy)


def _doppler_numpy(x: np.ndarray) -> np.ndarray:
    return np.sqrt(x * (1 - x)) * np.sin(2 * np.pi * (1 + DOPPLER_EPS) / (x + DOPPLER_EPS))


def piecewise(x: ArrayLike) -> ArrayLike:
    """A function whose smoothness changes across [0, 1]:

    - [0, 0.4): piecewise linear, a tent rising 0 -> 1 on [0, 0.2] and falling back to 0 at 0.4
      (kinks at 0.2 and 0.4);
    - [0.4, 0.7): a smooth cubic, the smoothstep 3u^2 - 2u^3 with u = (x - 0.4) / 0.3, from 0 to 1;
    - a jump at x = 0.7 down to -0.5, then the line -0.5 + (x - 0.7) up to -0.2 at x = 1.

    Accepts a float, numpy array or tensor and answers in kind (tensors keep their dtype).
    """
    return _in_kind(x, _piecewise_numpy)


def _piecewise_numpy(x: np.ndarray) -> np.ndarray:
    tent = np.where(x < 0.2, 5 * x, 1 - 5 * (x - 0.2))
    u = (x - 0.4) / 0.3
    smoothstep = u * u * (3 - 2 * u)
    line = -0.5 + (x - 0.7)
    return np.select([x < 0.4, x < 0.7], [tent, smoothstep], default=line)


def _in_kind(x: ArrayLike, formula: Callable[[np.ndarray], np.ndarray]) -> ArrayLike:
    """Evaluate ``formula`` in float64 and return the same kind of object that came in."""
    if isinstance(x, torch.Tensor):
        values = formula(x.detach().cpu().double().numpy())
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return torch.as_tensor(values, dtype=dtype, device=x.device)
    values = formula(np.asarray(x, dtype=np.float64))
    return float(values) if values.ndim == 0 else values


TARGET_FUNCTIONS: dict[str, Callable[[ArrayLike], ArrayLike]] = {"doppler": doppler, "piecewise": piecewise}
_NUMPY_FORMULAS = {"doppler": _doppler_numpy, "piecewise": _piecewise_numpy}


def load_doppler(
    *, seed: int = 0, n_train: int = 200, n_test: int = 1000, noise_std: float = 0.1, design: str = "random"
) -> Dataset:
    """Noisy samples of ``doppler``; the test set is the clean function on an even grid."""
    return _regression_1d("doppler", seed, n_train, n_test, noise_std, design)


def load_piecewise(
    *, seed: int = 0, n_train: int = 200, n_test: int = 1000, noise_std: float = 0.1, design: str = "random"
) -> Dataset:
    """Noisy samples of ``piecewise``; the test set is the clean function on an even grid."""
    return _regression_1d("piecewise", seed, n_train, n_test, noise_std, design)


def _regression_1d(name: str, seed: int, n_train: int, n_test: int, noise_std: float, design: str) -> Dataset:
    noise_std = check_number("noise_std", noise_std, low=0.0)
    design = str(check_choice("design", design, ("grid", "random")))
    target = _NUMPY_FORMULAS[name]
    if design == "grid":
        x_train = np.linspace(0.0, 1.0, n_train)
    else:
        # Unsorted on purpose: a prefix (Dataset.subset) of a random design is still a random design.
        x_train = rng_for(seed, "train x").uniform(0.0, 1.0, size=n_train)
    # Evaluate at the float32 inputs actually stored, so target(X) reproduces the clean part of
    # y exactly; otherwise the jump of piecewise at 0.7 lands on different sides of a grid point.
    x_train = x_train.astype(np.float32).astype(np.float64)
    y_train = target(x_train) + noise_std * rng_for(seed, "train noise").standard_normal(n_train)
    # Clean targets on a grid measure the error against the true function, not against noise.
    x_test = np.linspace(0.0, 1.0, n_test).astype(np.float32).astype(np.float64)
    y_test = target(x_test)
    meta = {
        "function": name,
        "noise_std": noise_std,
        "design": design,
        "x_range": [0.0, 1.0],
        "test_set": "clean targets (no noise) on an evenly spaced grid over [0, 1]",
    }
    return Dataset(
        name=name,
        X_train=torch.as_tensor(x_train, dtype=torch.float32).reshape(-1, 1),
        y_train=torch.as_tensor(y_train, dtype=torch.float32),
        X_test=torch.as_tensor(x_test, dtype=torch.float32).reshape(-1, 1),
        y_test=torch.as_tensor(y_test, dtype=torch.float32),
        n_classes=None,
        meta=meta,
    )
