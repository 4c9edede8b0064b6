"""One training loop: SGD (with momentum), Adam or full-batch GD, with periodic evaluation.

The loop is deterministic for a seed: the data order comes from its own ``torch.Generator`` and
nothing reads the global RNG. A NaN or infinite loss stops training and marks the history diverged;
the caller decides what a divergence means for its study.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from overparam.train.progress import SILENT, Progress

OPTIMIZERS = ("sgd", "adam", "gd")
SCHEDULES = ("constant", "cosine", "step", "inverse_sqrt")
LOSSES = ("cross_entropy", "mse")


class Diverged(RuntimeError):
    """Raised by a study when training produced a NaN/inf loss; the run is recorded as ``diverged``."""


@dataclass
class TrainConfig:
    optimizer: str = "sgd"          # "gd" is full-batch gradient descent (batch_size ignored)
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 100
    epochs: int = 10
    steps: int | None = None        # if set, overrides epochs
    schedule: str = "constant"
    loss: str = "cross_entropy"
    eval_every: int = 0             # steps between evaluations; 0 = once per epoch
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self):
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES), ("loss", self.loss, LOSSES),
                                     ("dtype", self.dtype, ("float32", "float64"))):
            if value not in allowed:
                raise ValueError(f"{name}: {value!r} is not allowed; choose one of: {', '.join(allowed)}")
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("lr must be > 0, batch_size >= 1 and epochs >= 0")

    def plan(self, n: int) -> tuple[int, int, int]:
        """(batch size, steps per epoch, total steps) of a run over ``n`` training examples."""
        batch = n if self.optimizer == "gd" else min(self.batch_size, n)
        per_epoch = math.ceil(n / batch)
        return batch, per_epoch, self.steps if self.steps is not None else self.epochs * per_epoch


@dataclass
class History:
    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_error: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_error: list[float] = field(default_factory=list)
    diverged: bool = False
    diverged_at: int | None = None
    seconds: float = 0.0

    def final(self) -> dict[str, float]:
        if not self.step:
            return {}
        return {k: getattr(self, k)[-1] for k in ("train_loss", "train_error", "test_loss", "test_error")}


def loss_function(name: str, n_classes: int | None):
    """Mean loss of a batch. MSE on a classification task regresses one-hot targets."""
    if name == "cross_entropy":
        return nn.functional.cross_entropy
    if n_classes is None:
        return lambda out, y: nn.functional.mse_loss(out.reshape(y.shape), y)
    return lambda out, y: nn.functional.mse_loss(out, nn.functional.one_hot(y, n_classes).to(out.dtype))


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn, batch_size: int = 4096):
    """Mean loss and error rate over (X, y); the error is NaN for regression targets."""
    total_loss, wrong = 0.0, 0
    classify = not torch.is_floating_point(y)
    for i in range(0, len(X), batch_size):
        out = model(X[i:i + batch_size])
        yb = y[i:i + batch_size]
        total_loss += float(loss_fn(out, yb)) * len(yb)
        if classify:
            wrong += int((out.argmax(1) != yb).sum())
    n = max(len(X), 1)
    return total_loss / n, (wrong / n if classify else math.nan)


def _schedule(name: str, total: int):
    if name == "cosine":
        return lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / max(total, 1)))
    if name == "step":  # divide by 10 at 50% and 75% of training
        return lambda t: 0.1 ** ((t >= 0.5 * total) + (t >= 0.75 * total))
    if name == "inverse_sqrt":
        return lambda t: 1.0 / math.sqrt(1.0 + t)
    return lambda t: 1.0


def make_optimizer(cfg: TrainConfig, params, foreach: bool | None = None) -> torch.optim.Optimizer:
    """torch's optimizer for ``cfg``; ``foreach=True`` updates all tensors in a few multi-tensor kernels
    (on CPU torch defaults to a Python loop over tensors; same arithmetic either way)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=foreach)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=foreach)


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
          X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
          n_classes: int | None = None, progress: Progress = SILENT, desc: str = "train") -> History:
    dtype = getattr(torch, cfg.dtype)
    model.to(dtype)
    X = X.to(dtype)
    y = y.to(dtype) if torch.is_floating_point(y) else y
    if X_test is not None:
        X_test = X_test.to(dtype)
        y_test = y_test.to(dtype) if torch.is_floating_point(y_test) else y_test
    loss_fn = loss_function(cfg.loss, n_classes)
    n = len(X)
    batch, per_epoch, total = cfg.plan(n)
    eval_every = cfg.eval_every or per_epoch
    opt = make_optimizer(cfg, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.schedule, total))
    gen = torch.Generator().manual_seed(cfg.seed)
    hist, start, order = History(), time.perf_counter(), None

    def record(step: int) -> None:
        model.eval()
        tr = evaluate(model, X, y, loss_fn)
        te = evaluate(model, X_test, y_test, loss_fn) if X_test is not None else (math.nan, math.nan)
        model.train()
        hist.step.append(step)
        for key, value in zip(("train_loss", "train_error", "test_loss", "test_error"), (*tr, *te)):
            getattr(hist, key).append(value)

    model.train()
    record(0)
    with progress.bar(total, desc) as bar:
        for step in range(total):
            k = step % per_epoch
            if k == 0:
                order = torch.randperm(n, generator=gen) if batch < n else torch.arange(n)
            idx = order[k * batch:(k + 1) * batch]
            loss = loss_fn(model(X[idx]), y[idx])
            if not torch.isfinite(loss):
                hist.diverged, hist.diverged_at = True, step
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            if (step + 1) % eval_every == 0 or step + 1 == total:
                record(step + 1)
                if not math.isfinite(hist.train_loss[-1]):
                    hist.diverged, hist.diverged_at = True, step + 1
                    break
    hist.seconds = time.perf_counter() - start
    return hist
