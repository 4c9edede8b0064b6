"""Arguments and loading shared by the commands that measure a user's model on the user's data.

Every problem becomes one :class:`overparam.usermodel.UserModelError` line (exit status 2).
"""

from __future__ import annotations

import json
import warnings

from overparam.commands.argtypes import positive_int

def add_model_args(p, data_help: str = ".npz with arrays X and y (or X_train, y_train)") -> None:
    """--model --weights --data --n --loss --dtype --batch-size --threads --json, as `measure hessian` has them."""
    p.add_argument("--model", required=True, metavar="SPEC", help="pkg.module:factory or path/file.py:factory")
    p.add_argument("--weights", metavar="FILE", help="state_dict saved by torch.save (loaded tensors-only)")
    p.add_argument("--data", required=True, metavar="FILE", help=data_help)
    p.add_argument("--n", type=positive_int, metavar="N", help="use the first N examples only")
    p.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "mse"),
                   help="cross_entropy needs integer labels; mse takes real targets (or one-hot of labels)")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--batch-size", type=positive_int, default=2048, help="examples per streamed batch")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: 1 below 20K parameters)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def load_model_quiet(spec: str, weights: str | None):
    from overparam.usermodel import load_model

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
    elif torch.is_floating_point(y) and y[:2].numel() != out.numel():
        raise UserModelError(f"targets y have {y[0].numel()} values per example but the model outputs {out.shape[1]}")


def load_inputs(args):
    """(model, X, y) checked: the model runs on X and the targets fit the loss (one-line errors otherwise)."""
    from overparam.usermodel import check_forward, load_arrays

    model = load_model_quiet(args.model, args.weights)
    X, y = load_arrays(args.data, args.n)
    if len(X) == 0:
        from overparam.usermodel import UserModelError

        raise UserModelError(f"--data: {args.data} holds no examples")
    out = check_forward(model, X)
    check_targets(args.loss, out, y)
    return model, X, y


def threads(args, model) -> int | None:
    from overparam.models import count_parameters

    return args.threads or (1 if count_parameters(model) < 20_000 else None)


def measuring(what: str):
    """Context manager turning the instrument's ValueError/RuntimeError into one UserModelError line."""
    from contextlib import contextmanager

    from overparam.usermodel import UserModelError

    @contextmanager
    def guard():
        try:
            yield
        except UserModelError:
            raise
        except (RuntimeError, ValueError, TypeError) as exc:
            msg = " ".join(str(exc).split())[:300]
            raise UserModelError(f"cannot measure {what} of this model and data: {msg}") from None

    return guard()


def print_json(obj) -> None:
    from overparam.store import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2, allow_nan=False))


def save_figure(fig, path: str) -> str:
    """Save a matplotlib figure (format from the suffix); one-line error when the folder or format is wrong."""
    from pathlib import Path

    from overparam.usermodel import UserModelError

    out = Path(path)
    if not out.parent.is_dir():
        raise UserModelError(f"--out: folder {out.parent} does not exist")
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in ("png", "pdf", "svg"):
        raise UserModelError(f"--out: {out.name} must end in .png, .pdf or .svg")
    try:
        fig.savefig(out, dpi=150)
    except OSError as exc:
        raise UserModelError(f"--out: cannot write {out}: {exc}") from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return str(out)


