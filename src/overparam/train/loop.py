"""One training loop: SGD (with momentum), Adam or full-batch GD, with periodic evaluation.

Everything in overparam that trains a single model goes through :func:`train` (ensembles go through
:func:`overparam.train.fit_ensemble`, which follows the same trajectory per replica). What studies need
beyond a named loss is passed in, not written as another loop:

- ``loss_fn``: any objective ``loss_fn(outputs, targets)``, or ``loss_fn(outputs, targets, step=, model=)``
  for objectives that change during training (an ELBO whose KL weight is annealed);
- ``penalty``: ``penalty(model)`` added to the loss at every step (weight penalties, sparsity regularizers);
- ``callbacks``: called around every optimizer update (see :class:`Callback`): masks, noise on the
  gradient, projections, snapshots;
- ``params``: what the optimizer updates (default: every parameter).

The loop is deterministic for a seed: the data order comes from its own ``torch.Generator`` and nothing
reads the global RNG. It follows the model's device. A NaN or infinite loss stops training and marks the
history diverged; the caller decides what a divergence means for its study.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

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
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("lr must be finite and > 0, batch_size >= 1 and epochs >= 0")

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


@dataclass
class StepInfo:
    """What a callback sees: the step just taken (1, 2, ...), its loss, the model (or ensemble) and the
    optimizer. Gradients are in place for ``before_update``."""

    step: int
    loss: torch.Tensor
    model: Any
    optimizer: torch.optim.Optimizer


class Callback:
    """Hooks around every optimizer update; override either. A plain function is an ``after_update``."""

    def before_update(self, info: StepInfo) -> None:
        """Gradients are computed, the update not yet applied (add noise, clip, mask gradients)."""

    def after_update(self, info: StepInfo) -> None:
        """The parameters are updated (project, re-apply masks, record, snapshot)."""


def as_callbacks(callbacks: Iterable[Callback | Callable[[StepInfo], None]]) -> list[Callback]:
    out = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            out.append(cb)
        elif callable(cb):
            hook = Callback()
            hook.after_update = cb
            out.append(hook)
        else:
            raise TypeError(f"a callback must be a Callback or a function of StepInfo, got {type(cb).__name__}")
    return out


def loss_function(name: str, n_classes: int | None):
    """Mean loss of a batch. MSE on a classification task regresses one-hot targets."""
    if name == "cross_entropy":
        return nn.functional.cross_entropy
    if n_classes is None:
        return lambda out, y: nn.functional.mse_loss(out.reshape(y.shape), y)
    return lambda out, y: nn.functional.mse_loss(out, nn.functional.one_hot(y, n_classes).to(out.dtype))


def objective(loss_fn: Callable | None, name: str, n_classes: int | None) -> Callable:
    """``f(outputs, targets, step, model)`` from a named loss or a user callable of 2 or 4 arguments."""
    if loss_fn is None:
        base = loss_function(name, n_classes)
        return lambda out, y, step, model: base(out, y)
    params = inspect.signature(loss_fn).parameters
    if "step" in params or "model" in params:
        return lambda out, y, step, model: loss_fn(out, y, step=step, model=model)
    return lambda out, y, step, model: loss_fn(out, y)


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


def schedule_factor(name: str, total: int) -> Callable[[int], float]:
    """The learning rate's multiplier at step t."""
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


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, total: int):
    """None for a constant rate (its per-step bookkeeping is measurable on small nets), else a LambdaLR."""
    if cfg.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(opt, schedule_factor(cfg.schedule, total))


def epoch_orders(n: int, batch: int, generator: torch.Generator):
    """The data order of each epoch: a fresh permutation from ``generator`` (all rows in order when one batch
    holds them all)."""
    while True:
        yield torch.randperm(n, generator=generator) if batch < n else torch.arange(n)


def _on_device(t: torch.Tensor | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """Data on the model's device; real values in the training dtype, labels as they are."""
    if t is None:
        return None
    return t.to(device=device, dtype=dtype) if torch.is_floating_point(t) else t.to(device)


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
          X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
          n_classes: int | None = None, progress: Progress = SILENT, desc: str = "train", *,
          loss_fn: Callable | None = None, penalty: Callable[[nn.Module], torch.Tensor] | None = None,
          callbacks: Sequence[Callback | Callable] = (), params: Iterable[torch.Tensor] | None = None) -> History:
    """Train ``model`` on (X, y) under ``cfg``; returns the evaluation history (see the module docstring)."""
    dtype = getattr(torch, cfg.dtype)
    device = next(model.parameters()).device
    model.to(dtype)
    X, y, X_test, y_test = (_on_device(t, device, dtype) for t in (X, y, X_test, y_test))
    objective_fn = objective(loss_fn, cfg.loss, n_classes)
    eval_loss = (loss_function(cfg.loss, n_classes) if loss_fn is None
                 else lambda out, yb: objective_fn(out, yb, 0, model))
    hooks = as_callbacks(callbacks)
    n = len(X)
    batch, per_epoch, total = cfg.plan(n)
    eval_every = cfg.eval_every or per_epoch
    opt = make_optimizer(cfg, model.parameters() if params is None else params)
    sched = make_scheduler(cfg, opt, total)
    orders = epoch_orders(n, batch, torch.Generator().manual_seed(cfg.seed))
    hist, start, order = History(), time.perf_counter(), None

    def record(step: int) -> None:
        model.eval()
        tr = evaluate(model, X, y, eval_loss)
        te = evaluate(model, X_test, y_test, eval_loss) if X_test is not None else (math.nan, math.nan)
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
                order = next(orders).to(device)
            idx = order[k * batch:(k + 1) * batch]
            loss = objective_fn(model(X[idx]), y[idx], step, model)
            if penalty is not None:
                loss = loss + penalty(model)
            if not torch.isfinite(loss):
                hist.diverged, hist.diverged_at = True, step
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            info = StepInfo(step + 1, loss.detach(), model, opt) if hooks else None
            for hook in hooks:
                hook.before_update(info)
            opt.step()
            if sched is not None:
                sched.step()
            for hook in hooks:
                hook.after_update(info)
            bar.update(1)
            if (step + 1) % eval_every == 0 or step + 1 == total:
                record(step + 1)
                if not math.isfinite(hist.train_loss[-1]):
                    hist.diverged, hist.diverged_at = True, step + 1
                    break
    hist.seconds = time.perf_counter() - start
    return hist
