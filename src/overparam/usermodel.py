"""Bring your own model: ``pkg.module:factory`` + a weights file + an ``.npz`` of data, for `overparam measure`.

Weights are loaded with ``torch.load(..., weights_only=True)``: a checkpoint can hold tensors, never
code, so a malicious pickle is refused instead of executed. Every problem is a one-line
:class:`UserModelError` naming the path, the factory or the shape that is wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


class UserModelError(ValueError):
    pass


def load_factory(spec: str):
    """``pkg.module:factory`` or ``path/to/file.py:factory`` -> the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserModelError(f"--model must look like pkg.module:factory or file.py:factory, got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserModelError(f"model file not found: {path}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules.setdefault(path.stem, module)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UserModelError:
        raise
    except Exception as exc:
        raise UserModelError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserModelError(f"{module_name!r} has no callable {attr!r}")
    return factory


def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    model = load_factory(spec)()
    if not isinstance(model, nn.Module):
        raise UserModelError(f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserModelError(f"weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
            raise UserModelError(f"refusing {path}: not a plain tensor checkpoint (weights_only load failed: {first})") from None
        except Exception as exc:
            raise UserModelError(f"cannot read weights {path}: {type(exc).__name__}: {exc}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise UserModelError(f"{path} holds a {type(state).__name__}, expected a state_dict")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise UserModelError(f"weights {path} do not fit the model from {spec!r}: {detail}") from None
    return model


def load_arrays(path: str | Path, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``X`` and ``y`` from an .npz (keys X, y; or X_train, y_train); integer y stays integer (classes)."""
    path = Path(path)
    if not path.is_file():
        raise UserModelError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk, yk = ("X", "y") if {"X", "y"} <= keys else ("X_train", "y_train")
            if not {xk, yk} <= keys:
                raise UserModelError(f"{path} needs arrays X and y (or X_train and y_train); it has {sorted(keys)}")
            X, y = z[xk], z[yk]
    except UserModelError:
        raise
    except Exception as exc:
        raise UserModelError(f"cannot read {path} as .npz: {type(exc).__name__}: {exc}") from None
    if len(X) != len(y):
        raise UserModelError(f"{path}: X has {len(X)} rows but y has {len(y)}")
    if n is not None:
        X, y = X[:n], y[:n]
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y).long() if np.issubdtype(y.dtype, np.integer) else torch.as_tensor(y, dtype=torch.float32)
    return Xt, yt


def check_forward(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Run the model on two examples so a shape mismatch is reported before any long computation."""
    try:
        with torch.no_grad():
            return model(X[:2])
    except Exception as exc:
        msg = " ".join(str(exc).split())[:200]
        raise UserModelError(f"the model cannot take inputs of shape {tuple(X.shape[1:])}: {msg}") from None
