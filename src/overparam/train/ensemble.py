"""Train R replicas of one architecture in one batched computation (torch.func + vmap).

Each replica has its own initialization seed and, by choice, its own data order (``data_seeds``)
or the shared order of ``cfg.seed``. The replicas' parameters are stacked along a leading axis and
a single optimizer (SGD, momentum, Adam, weight decay: all elementwise) updates the stack, so every
replica follows exactly the trajectory it would follow alone under :func:`overparam.train.train`
(tested to float tolerance). A replica whose loss turns NaN/inf is recorded as diverged and frozen;
the others go on.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from overparam.models import seeded
from overparam.train.loop import TrainConfig, _schedule, loss_function, make_optimizer
from overparam.train.progress import SILENT, Progress


@dataclass
class EnsembleHistory:
    """Per-replica curves: arrays of shape (evaluations, replicas)."""

    step: list[int] = field(default_factory=list)
    train_loss: list[np.ndarray] = field(default_factory=list)
    train_error: list[np.ndarray] = field(default_factory=list)
    test_loss: list[np.ndarray] = field(default_factory=list)
    test_error: list[np.ndarray] = field(default_factory=list)
    diverged: np.ndarray | None = None        # (replicas,) bool
    diverged_at: np.ndarray | None = None     # (replicas,) step of divergence, -1 if none
    seconds: float = 0.0

    def curves(self, key: str) -> np.ndarray:
        return np.stack(getattr(self, key)) if getattr(self, key) else np.zeros((0, 0))

    def final(self) -> dict[str, np.ndarray]:
        """Last evaluation of each replica (NaN for diverged replicas)."""
        return {k: self.curves(k)[-1] for k in ("train_loss", "train_error", "test_loss", "test_error")}


class Ensemble:
    """R stacked replicas of one module; ``ensemble.replica(r)`` gives replica r back as a module."""

    def __init__(self, build: Callable[[], nn.Module], seeds: list[int], dtype: torch.dtype = torch.float32):
        models = [seeded(build, s).to(dtype) for s in seeds]
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(models[0]).to("meta")
        self._template = models[0]
        self.size = len(seeds)

        def forward(p, b, x):
            return functional_call(self.base, (p, b), (x,))

        self._forward = forward

    def forward(self, x: torch.Tensor, shared: bool = True) -> torch.Tensor:
        """Outputs of every replica: x (N, ...) shared, or (R, N, ...) one batch per replica -> (R, N, out)."""
        return vmap(self._forward, in_dims=(0, 0, None if shared else 0))(self.params, self.buffers, x)

    def replica(self, r: int) -> nn.Module:
        model = copy.deepcopy(self._template)
        state = {k: v[r].detach().clone() for k, v in {**self.params, **self.buffers}.items()}
        model.load_state_dict(state)
        return model


@torch.no_grad()
def evaluate_ensemble(ens: Ensemble, X: torch.Tensor, y: torch.Tensor, loss_name: str, n_classes: int | None,
                      batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and error rate of each replica over (X, y)."""
    loss_fn = loss_function(loss_name, n_classes)
    per_replica = vmap(loss_fn, in_dims=(0, None))
    total = torch.zeros(ens.size, dtype=torch.float64)
    wrong = torch.zeros(ens.size, dtype=torch.float64)
    classify = not torch.is_floating_point(y)
    for i in range(0, len(X), batch_size):
        out = ens.forward(X[i:i + batch_size])
        yb = y[i:i + batch_size]
        total += per_replica(out, yb).double() * len(yb)
        if classify:
            wrong += (out.argmax(-1) != yb).sum(-1).double()
    n = max(len(X), 1)
    return (total / n).numpy(), ((wrong / n).numpy() if classify else np.full(ens.size, np.nan))


def train_ensemble(build: Callable[[], nn.Module], seeds: list[int], X: torch.Tensor, y: torch.Tensor,
                   cfg: TrainConfig, X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                   n_classes: int | None = None, data_seeds: list[int] | None = None,
                   progress: Progress = SILENT, desc: str = "ensemble") -> tuple[Ensemble, EnsembleHistory]:
    """Train ``len(seeds)`` replicas of ``build()`` at once; replica r starts from ``seeded(build, seeds[r])``.

    ``data_seeds=None`` shares one data order (``cfg.seed``) among replicas; a list gives replica r the
    order of ``cfg.seed = data_seeds[r]``.
    """
    dtype = getattr(torch, cfg.dtype)
    ens = Ensemble(build, seeds, dtype)
    R = ens.size
    X = X.to(dtype)
    y = y.to(dtype) if torch.is_floating_point(y) else y
    if X_test is not None:
        X_test = X_test.to(dtype)
        y_test = y_test.to(dtype) if torch.is_floating_point(y_test) else y_test
    if data_seeds is not None and len(data_seeds) != R:
        raise ValueError(f"data_seeds has {len(data_seeds)} entries for {R} replicas")
    loss_fn = loss_function(cfg.loss, n_classes)
    n = len(X)
    batch = n if cfg.optimizer == "gd" else min(cfg.batch_size, n)
    per_epoch = math.ceil(n / batch)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * per_epoch
    eval_every = cfg.eval_every or per_epoch
    shared = data_seeds is None or batch == n
    gens = [torch.Generator().manual_seed(s) for s in ([cfg.seed] if shared else data_seeds)]
    opt = make_optimizer(cfg, list(ens.params.values()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.schedule, total))

    def replica_loss(p, b, xb, yb):
        return loss_fn(functional_call(ens.base, (p, b), (xb,)), yb)

    batched_loss = vmap(replica_loss, in_dims=(0, 0, None if shared else 0, None if shared else 0))
    hist = EnsembleHistory()
    alive = torch.ones(R, dtype=torch.bool)
    diverged_at = np.full(R, -1)
    start, orders = time.perf_counter(), None

    def record(step: int) -> None:
        tr = evaluate_ensemble(ens, X, y, cfg.loss, n_classes)
        te = (evaluate_ensemble(ens, X_test, y_test, cfg.loss, n_classes) if X_test is not None
              else (np.full(R, np.nan), np.full(R, np.nan)))
        hist.step.append(step)
        for key, value in zip(("train_loss", "train_error", "test_loss", "test_error"), (*tr, *te)):
            value = value.copy()
            value[~alive.numpy()] = np.nan
            getattr(hist, key).append(value)

    record(0)
    with progress.bar(total, desc) as bar:
        for step in range(total):
            k = step % per_epoch
            if k == 0:
                orders = [torch.randperm(n, generator=g) if batch < n else torch.arange(n) for g in gens]
            if shared:
                idx = orders[0][k * batch:(k + 1) * batch]
                losses = batched_loss(ens.params, ens.buffers, X[idx], y[idx])
            else:
                idx = torch.stack([o[k * batch:(k + 1) * batch] for o in orders])
                losses = batched_loss(ens.params, ens.buffers, X[idx], y[idx])
            bad = alive & ~torch.isfinite(losses.detach())
            if bad.any():
                diverged_at[bad.numpy()] = step
                alive &= ~bad
                if not alive.any():
                    break
            opt.zero_grad(set_to_none=True)
            torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
            frozen = {name: p.detach()[~alive].clone() for name, p in ens.params.items()} if not alive.all() else None
            opt.step()
            sched.step()
            if frozen is not None:  # diverged replicas stay where they stopped
                with torch.no_grad():
                    for name, p in ens.params.items():
                        p[~alive] = frozen[name]
            bar.update(1)
            if (step + 1) % eval_every == 0 or step + 1 == total:
                record(step + 1)
                newly = alive.numpy() & ~np.isfinite(hist.train_loss[-1])
                if newly.any():
                    diverged_at[newly] = step + 1
                    alive &= ~torch.from_numpy(newly)
                    if not alive.any():
                        break
    hist.diverged = diverged_at >= 0
    hist.diverged_at = diverged_at
    hist.seconds = time.perf_counter() - start
    return ens, hist
