"""Arguments and loading shared by the commands that measure a user's model on the user's data.

Everything a command is given is checked before any work: the model builds and runs on the data, the
weights load (tensors only) and are finite, the data are finite real numbers whose targets fit the loss,
and what the measurement will allocate fits in the machine's memory. Every problem becomes one
:class:`overparam.usermodel.UserModelError` line (exit status 2).
"""

from __future__ import annotations

import json
import warnings

from overparam.commands.argtypes import positive_int, thread_count

MODEL_HELP = ("pkg.module:factory or path/file.py:factory, optionally with literal arguments: "
              "file.py:build(num_classes=10); a file is imported, i.e. its code runs")


def add_model_spec_args(p) -> None:
    """--model --weights --random-init: which network, and which weights (a state_dict, or the factory's own
    initialization when asked for explicitly)."""
    p.add_argument("--model", required=True, metavar="SPEC", help=MODEL_HELP)
    p.add_argument("--weights", metavar="FILE", help="state_dict saved by torch.save (loaded tensors-only)")
    p.add_argument("--random-init", action="store_true",
                   help="measure the factory's random initialization (no --weights)")


def add_model_args(p, data_help: str = ".npz with arrays X and y (or X_train, y_train)") -> None:
    """--model --weights --random-init --data --n --loss --dtype --batch-size --threads --json."""
    add_model_spec_args(p)
    p.add_argument("--data", required=True, metavar="FILE", help=data_help)
    p.add_argument("--n", type=positive_int, metavar="N", help="use the first N examples only")
    p.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "mse"),
                   help="cross_entropy needs integer labels; mse takes real targets (or one-hot of labels)")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--batch-size", type=positive_int, default=2048, help="examples per streamed batch")
    p.add_argument("--threads", type=thread_count, help="torch threads (default: 1 below 20K parameters, where "
                   "per-operation overhead dominates and more threads only slow it down)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def load_model_quiet(spec: str, weights: str | None, random_init: bool = False, flag: str = "--weights"):
    """The user's model with its weights; without a weights file only when --random-init says so."""
    from overparam.usermodel import UserModelError, load_model

    if weights is None and not random_init:
        raise UserModelError(f"{flag} FILE is missing: give the trained state_dict, or --random-init to measure "
                             "the factory's random initialization")
    if weights is not None and random_init:
        raise UserModelError(f"--random-init and {flag} exclude each other: measure the weights or the "
                             "initialization")
    with warnings.catch_warnings():  # torch's warnings about refused pickles would break the one-line error
        warnings.simplefilter("ignore")
        return load_model(spec, weights)


def check_targets(loss: str, out, y) -> None:
    """The model's output is (batch, outputs) and the targets fit the loss: labels in range, or real targets of
    the output's size."""
    import torch

    from overparam.usermodel import UserModelError

    if out.ndim != 2:
        raise UserModelError(f"the model's output must be (batch, outputs), got shape {tuple(out.shape)}")
    if loss == "cross_entropy":
        if torch.is_floating_point(y):
            raise UserModelError("--loss cross_entropy needs integer class labels in y; use --loss mse for real targets")
        if y.ndim != 1 or int(y.min()) < 0 or int(y.max()) >= out.shape[1]:
            raise UserModelError(f"labels y must be 1-D in [0, {out.shape[1] - 1}] for a model with {out.shape[1]} "
                                 f"outputs; got shape {tuple(y.shape)}, range [{int(y.min())}, {int(y.max())}]")
    elif torch.is_floating_point(y):
        if y[:2].numel() != out.numel():
            raise UserModelError(f"targets y have {y[0].numel()} values per example but the model outputs "
                                 f"{out.shape[1]}")
    elif y.ndim != 1 or int(y.min()) < 0 or int(y.max()) >= out.shape[1]:  # mse on one-hot of integer labels
        raise UserModelError(f"labels y must be 1-D in [0, {out.shape[1] - 1}] (one-hot targets for a model with "
                             f"{out.shape[1]} outputs); got shape {tuple(y.shape)}, range "
                             f"[{int(y.min())}, {int(y.max())}]")


def load_inputs(args):
    """(model, X, y) checked: the model runs on X and the targets fit the loss (one-line errors otherwise)."""
    from overparam.usermodel import UserModelError, check_forward, load_arrays

    X, y = load_arrays(args.data, args.n)
    if len(X) == 0:
        raise UserModelError(f"--data: {args.data} holds no examples")
    model = load_model_quiet(args.model, args.weights, args.random_init)
    out = check_forward(model, X)
    check_targets(args.loss, out, y)
    return model, X, y


def threads(args, model) -> int | None:
    from overparam.models import count_parameters

    return args.threads or (1 if count_parameters(model) < 20_000 else None)


def check_memory(need_bytes: float, what: str) -> None:
    """Refuse before starting a computation whose arrays need more memory than the machine has available."""
    from overparam.config import available_memory, format_bytes
    from overparam.usermodel import UserModelError

    available = available_memory()
    if available is not None and need_bytes > available:
        raise UserModelError(f"{what} needs about {format_bytes(need_bytes)} of memory, more than the "
                             f"{format_bytes(available)} available")


def measuring(what: str):
    """Context manager for a measurement: the instrument's ValueError/RuntimeError becomes one UserModelError
    line, and what native solvers (LAPACK, ARPACK) print to the terminal is kept out of it."""
    from contextlib import contextmanager

    from overparam.commands.native_output import native_noise_filtered
    from overparam.usermodel import UserModelError, one_line

    @contextmanager
    def guard():
        try:
            with native_noise_filtered():
                yield
        except UserModelError:
            raise
        except (RuntimeError, ValueError, TypeError, ArithmeticError) as exc:
            raise UserModelError(f"cannot measure {what} of this model and data: {one_line(exc)}") from None

    return guard()


def print_json(obj) -> None:
    from overparam.store import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2, allow_nan=False))


def check_out_path(path: str) -> None:
    """--out must name a .png, .pdf or .svg in an existing folder (checked before a long computation)."""
    from pathlib import Path

    from overparam.usermodel import UserModelError

    out = Path(path)
    if not out.parent.is_dir():
        raise UserModelError(f"--out: folder {out.parent} does not exist")
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserModelError(f"--out: {out.name} must end in .png, .pdf or .svg")


def save_figure(fig, path: str) -> str:
    """Save a matplotlib figure (format from the suffix); one-line error when the folder or format is wrong."""
    from overparam.usermodel import UserModelError

    try:
        check_out_path(path)
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise UserModelError(f"--out: cannot write {path}: {exc}") from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return str(path)
