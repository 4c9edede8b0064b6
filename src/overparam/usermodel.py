"""Bring your own model: ``pkg.module:factory`` + a weights file + an ``.npz`` of data, for `overparam measure`.

``--model file.py:factory`` imports and runs that file (as ``python file.py`` would, without its
``__main__`` block), then calls ``factory()``; literal arguments may follow, ``file.py:build(num_classes=10)``
(read with :func:`ast.literal_eval`, never evaluated). Weights are loaded with
``torch.load(..., weights_only=True)``: a checkpoint can hold tensors, never code, so a malicious pickle
is refused instead of executed. Data are checked before any work: real numbers, finite, rows matching.
Every problem is a one-line :class:`UserModelError` naming the path, the factory or the array at fault.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class UserModelError(ValueError):
    pass


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SPEC = re.compile(r"^(?P<module>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<args>.*)\))?$", re.S)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"   # pickle protocol 2 and later: torch's legacy (non-zip) format
FLOAT32_MAX = float(np.finfo(np.float32).max)
_SYSTEM_MODULES = ("builtins", "__builtin__", "posix", "nt", "os", "sys", "subprocess", "shutil")


def one_line(text: str, limit: int = 300) -> str:
    """An error text as one short line: no terminal escape codes, no newlines."""
    text = " ".join(_ANSI.sub("", str(text)).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_spec(spec: str) -> tuple[str, str, tuple, dict[str, Any]]:
    """``module:factory`` or ``module:factory(literal args)`` -> (module, factory, args, kwargs)."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise UserModelError(f"--model must look like pkg.module:factory or file.py:factory (optionally "
                             f"file.py:factory(num_classes=10)), got {one_line(spec, 80)!r}")
    args, kwargs = (), {}
    if match["args"] is not None and match["args"].strip():
        try:
            call = ast.parse(f"f({match['args']})", mode="eval").body
            if not isinstance(call, ast.Call) or any(isinstance(a, ast.Starred) for a in call.args) \
                    or any(k.arg is None for k in call.keywords):
                raise ValueError
            args = tuple(ast.literal_eval(a) for a in call.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            raise UserModelError(f"--model: the arguments of {match['attr']} must be Python literals (numbers, "
                                 f"strings, lists, dicts), got ({one_line(match['args'], 80)})") from None
    return match["module"], match["attr"], args, kwargs


def _import(module_name: str):
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise UserModelError(f"model file not found: {path}")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules.setdefault(path.stem, module)
        mod_spec.loader.exec_module(module)
        return module
    return importlib.import_module(module_name)


def load_factory(spec: str):
    """``pkg.module:factory`` or ``path/to/file.py:factory`` -> the callable (the file is imported, i.e. run)."""
    module_name, attr, _, _ = parse_spec(spec)
    try:
        module = _import(module_name)
    except UserModelError:
        raise
    except SystemExit as exc:
        raise UserModelError(f"{module_name} called sys.exit({one_line(exc.code, 40) if exc.code is not None else ''}) "
                             "while being imported; a model file must define its factory without exiting") from None
    except Exception as exc:
        raise UserModelError(f"cannot import {module_name!r}: {type(exc).__name__}: {one_line(exc)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserModelError(f"{module_name!r} has no callable {attr!r}")
    return factory


def build_model(spec: str) -> nn.Module:
    """Call the factory of ``spec`` with its literal arguments; a factory that needs other arguments, raises
    or exits is one line."""
    _, attr, args, kwargs = parse_spec(spec)
    factory = load_factory(spec)
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as exc:
        raise UserModelError(f"factory {attr} cannot be called with ({_call_text(args, kwargs)}): {one_line(exc)}; "
                             f"pass its arguments in the spec, e.g. file.py:{attr}(num_classes=10)") from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    try:
        model = factory(*args, **kwargs)
    except SystemExit as exc:
        raise UserModelError(f"factory {attr} called sys.exit({'' if exc.code is None else one_line(exc.code, 40)})"
                             ) from None
    except Exception as exc:
        raise UserModelError(f"factory {attr} raised {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserModelError(f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _call_text(args: tuple, kwargs: dict) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """The factory's model, with the state_dict in ``weights`` loaded (None keeps the factory's
    initialization); every parameter and buffer must be finite."""
    model = build_model(spec)
    if weights is not None:
        path = Path(weights)
        state = load_state_dict(path)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise UserModelError(f"weights {path} do not fit the model from {spec!r}: {one_line(exc)}") from None
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            where = f"weights {weights}" if weights is not None else f"the model from {spec!r}"
            raise UserModelError(f"{where}: {name} holds NaN or inf values")
    return model


def load_state_dict(path: Path) -> dict:
    """A state_dict from a ``torch.save`` file, loaded tensors-only; other files get a message saying what
    they are and what to save instead."""
    head = _head(path, "weights")
    if head.startswith(_NPY_MAGIC):
        raise UserModelError(f"weights {path} is a NumPy .npy array; save the weights with "
                             "torch.save(model.state_dict(), path)")
    if head.startswith(_ZIP_MAGIC) and _is_npz(path):
        raise UserModelError(f"weights {path} is a NumPy .npz archive; save the weights with "
                             "torch.save(model.state_dict(), path)")
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise UserModelError(f"weights {path} is not a file written by torch.save; save the weights with "
                             "torch.save(model.state_dict(), path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserModelError(_refusal(path, exc)) from None
    except Exception as exc:
        raise UserModelError(f"cannot read weights {path} as a torch.save file: {type(exc).__name__}: "
                             f"{one_line(exc, 200)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserModelError(f"{path} holds a {type(state).__name__}, expected a state_dict "
                             "(save it with torch.save(model.state_dict(), path))")
    return state


def _refusal(path: Path, exc: Exception) -> str:
    """Why a tensors-only load refused a checkpoint, without running it: a whole pickled model gets the
    state_dict hint, anything else the names of the objects it holds."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        found = []
    text = one_line(exc, 200)
    if not found:  # an old-format or raw pickle: the error names the first unsafe global, if any
        found = re.findall(r"GLOBAL ([\w.]+)", text)
    modules = any(g.startswith("torch.nn.") or g.rsplit(".", 1)[-1][:1].isupper() for g in found)
    system = any(g.split(".")[0] in _SYSTEM_MODULES for g in found)
    if modules and not system:
        return (f"refusing {path}: it holds a whole pickled model (torch.save(model)), which only loads by "
                f"running code; save model.state_dict() instead: torch.save(model.state_dict(), path)")
    names = ", ".join(found[:3]) or "unsafe content"
    return f"refusing {path}: not a plain tensor checkpoint (it holds {names}; only tensors load safely)"


def _head(path: Path, what: str, n: int = 8) -> bytes:
    """The first bytes of a file, which say what kind of file it is."""
    if not path.is_file():
        raise UserModelError(f"{what} file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return handle.read(n)
    except OSError as exc:
        raise UserModelError(f"cannot read {path}: {one_line(exc)}") from None


def _is_npz(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


def load_arrays(path: str | Path, n: int | None = None, need_y: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``X`` and ``y`` from an .npz (keys X, y; or X_train, y_train); integer y stays integer (classes).
    With ``need_y=False`` only X is read (y is None).

    X must be real numbers (bool, integer or float; not complex, not text), finite in float32, with one
    row per example; y the same length, integer labels or finite real targets."""
    path = Path(path)
    head = _head(path, "data")
    if head.startswith(_NPY_MAGIC):
        raise UserModelError(f"--data {path} is a single .npy array; save inputs and targets together with "
                             "np.savez(path, X=X, y=y)")
    if not head.startswith(_ZIP_MAGIC):
        raise UserModelError(f"--data {path} is not an .npz archive; write one with np.savez(path, X=X, y=y)")
    if not _is_npz(path):
        raise UserModelError(f"--data {path} is a zip file but not an .npz archive (a torch checkpoint?); "
                             "write the data with np.savez(path, X=X, y=y)")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk, yk = ("X", "y") if "X" in keys else ("X_train", "y_train")
            if xk not in keys or (need_y and yk not in keys):
                wanted = "arrays X and y (or X_train and y_train)" if need_y else "an array X (or X_train)"
                raise UserModelError(f"{path} needs {wanted}; it has {sorted(keys)}")
            X = z[xk]
            y = z[yk] if need_y else None
    except UserModelError:
        raise
    except Exception as exc:
        raise UserModelError(f"cannot read {path} as .npz: {type(exc).__name__}: {one_line(exc)}") from None
    check_array(X, f"{path}: {xk}")
    if y is not None:
        check_array(y, f"{path}: {yk}")
        if len(X) != len(y):
            raise UserModelError(f"{path}: {xk} has {len(X)} rows but {yk} has {len(y)}")
    if n is not None:
        X = X[:n]
        y = None if y is None else y[:n]
    Xt = torch.as_tensor(X.astype(np.float32))
    if y is None:
        return Xt, None
    is_label = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    return Xt, torch.as_tensor(y.astype(np.int64) if is_label else y.astype(np.float32))


def check_array(a: np.ndarray, name: str) -> None:
    """Real numbers, finite, at least one dimension (one row per example)."""
    if a.dtype.kind == "c":
        raise UserModelError(f"{name} is complex ({a.dtype}); the instruments take real numbers")
    if a.dtype.kind not in "biuf":
        raise UserModelError(f"{name} must hold numbers, not {a.dtype} ({_kind_text(a.dtype)})")
    if a.ndim == 0:
        raise UserModelError(f"{name} is a single number; it needs one row per example")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            first = np.argwhere(bad)[0]
            raise UserModelError(f"{name} holds {int(bad.sum())} NaN or inf values (the first at index "
                                 f"{tuple(int(i) for i in first)}); the instruments need finite numbers")
    if a.size and a.dtype.kind == "f" and a.dtype.itemsize > 4 and np.abs(a).max() > FLOAT32_MAX:
        raise UserModelError(f"{name} has values too large for float32 (above {FLOAT32_MAX:.3g}), the "
                             "precision models load data in")


def _kind_text(dtype: np.dtype) -> str:
    return {"U": "text", "S": "bytes", "O": "Python objects", "M": "dates", "m": "time spans",
            "V": "raw records"}.get(dtype.kind, "not numbers")


def check_forward(model: nn.Module, X: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Run the model (in eval mode, so batch-norm statistics stay as they are) on two examples, so that a shape
    mismatch is reported before any long computation, then on all of X: every output must be finite.
    Returns the outputs of the first two examples."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                out = model(X[:2])
            except Exception as exc:
                raise UserModelError(f"the model cannot take inputs of shape {tuple(X.shape[1:])}: "
                                     f"{one_line(exc, 200)}") from None
            if not isinstance(out, torch.Tensor):
                raise UserModelError(f"the model returned {type(out).__name__}, expected a tensor of outputs")
            if torch.is_complex(out):
                raise UserModelError("the model's output is complex; the instruments take real outputs")
            for start in range(0, len(X), batch_size):
                try:
                    chunk = model(X[start:start + batch_size])
                except Exception as exc:
                    raise UserModelError(f"the model fails on examples {start}..{start + batch_size - 1}: "
                                         f"{one_line(exc, 200)}") from None
                if torch.is_floating_point(chunk) and not bool(torch.isfinite(chunk).all()):
                    first = start + int((~torch.isfinite(chunk)).reshape(len(chunk), -1).any(1).nonzero()[0])
                    raise UserModelError(f"the model's output is NaN or inf on example {first} of the data")
    finally:
        model.train(was_training)
    return out
