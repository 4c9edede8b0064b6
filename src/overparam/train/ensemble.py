"""Train R replicas of one architecture in one batched computation (torch.func + vmap).

Each replica has its own initialization seed and, by choice, its own data order (``data_seeds``)
or the shared order of ``cfg.seed``. The replicas' parameters are stacked along a leading axis and
a single optimizer (SGD, momentum, Adam, weight decay: all elementwise) updates the stack, so every
replica follows exactly the trajectory it would follow alone under :func:`overparam.train.train`
(tested to float tolerance). A replica whose loss turns NaN/inf is recorded as diverged and frozen;
the others go on. Stacked ReLU MLPs skip autograd: their gradients come from the hand-derived step of
:mod:`overparam.train.fused`; every other model goes through ``vmap(functional_call)`` and autograd.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from overparam.models import MLP, seeded
from overparam.train.fused import StackedMLPStep
from overparam.train.fused import supports as fused_supports
from overparam.train.loop import TrainConfig, _schedule, loss_function, make_optimizer
from overparam.train.parallel import ThreadTuner, keep_freed_memory
from overparam.train.progress import SILENT, Progress


CURVES = ("train_loss", "train_error", "test_loss", "test_error")
EVAL_REPLICA_ROWS = 32768


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
        return {k: self.curves(k)[-1] for k in CURVES}


class Ensemble:
    """R stacked replicas of one module; ``ensemble.replica(r)`` gives replica r back as a module.

    ``masks`` (optional, name -> tensor of the stacked parameter's shape) marks the entries that may
    train: gradients are multiplied by it, so masked entries keep their initial value. This is how
    networks of different widths share one stack (see :mod:`overparam.train.widths`).
    """

    def __init__(self, models: list[nn.Module], dtype: torch.dtype = torch.float32,
                 masks: dict[str, torch.Tensor] | None = None):
        models = [m.to(dtype) for m in models]
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(models[0]).to("meta")
        self._template = models[0]
        self.size = len(models)
        self.masks = {k: m.to(dtype) for k, m in (masks or {}).items()}

        def forward(p, b, x):
            return functional_call(self.base, (p, b), (x,))

        self._forward = forward
        # MLPs take a fast path: batched matmuls on the stacked weights instead of vmap(functional_call),
        # whose per-call overhead dominates for the small networks this engine is for.
        self._mlp_layers = _mlp_layers(models[0]) if isinstance(models[0], MLP) and not self.buffers else None

    def forward(self, x: torch.Tensor, shared: bool = True) -> torch.Tensor:
        """Outputs of every replica: x (N, ...) shared, or (R, N, ...) one batch per replica -> (R, N, out)."""
        if self._mlp_layers is not None:
            h = x.flatten(1).expand(self.size, -1, -1) if shared else x.flatten(2)
            for weight, bias, act in self._mlp_layers:
                W = self.params[weight].transpose(1, 2)
                h = torch.baddbmm(self.params[bias].unsqueeze(1), h, W) if bias else torch.bmm(h, W)
                if isinstance(act, nn.ReLU):
                    h = torch.relu_(h)  # in place: the matmul's backward does not need its output
                elif act is not None:
                    h = act(h)
            return h
        return vmap(self._forward, in_dims=(0, 0, None if shared else 0))(self.params, self.buffers, x)

    def replica(self, r: int) -> nn.Module:
        model = copy.deepcopy(self._template)
        state = {k: v[r].detach().clone() for k, v in {**self.params, **self.buffers}.items()}
        model.load_state_dict(state)
        return model


def _mlp_layers(model: MLP) -> list[tuple[str, str | None, Callable | None]]:
    """(weight name, bias name, activation after it) for each Linear of an MLP."""
    layers, modules = [], list(model.net.named_children())
    for i, (name, module) in enumerate(modules):
        if isinstance(module, nn.Linear):
            nxt = modules[i + 1][1] if i + 1 < len(modules) else None
            layers.append((f"net.{name}.weight", f"net.{name}.bias" if module.bias is not None else None,
                           nxt if nxt is not None and not isinstance(nxt, nn.Linear) else None))
    return layers


def replica_losses(loss_name: str, out: torch.Tensor, y: torch.Tensor, n_classes: int | None) -> torch.Tensor:
    """Mean loss of each replica, as loss_function computes it: out (R, N, C), y (R, N[, k])."""
    R, N = out.shape[:2]
    if loss_name == "cross_entropy":
        # classes on dim 1 ((R, C, N) as a view): PyTorch's kernel is several times faster this way round
        # than on (R*N, C) rows of only C entries
        return nn.functional.cross_entropy(out.transpose(1, 2), y.reshape(R, N), reduction="none").mean(1)
    target = nn.functional.one_hot(y, n_classes).to(out.dtype) if n_classes is not None else y.reshape(out.shape)
    return ((out - target) ** 2).reshape(R, -1).mean(1)


@torch.no_grad()
def evaluate_ensemble(ens: Ensemble, X: torch.Tensor, y: torch.Tensor, loss_name: str, n_classes: int | None,
                      batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and error rate of each replica over (X, y).

    Rows go through in chunks of ``batch_size`` (default: about 32k replica-rows, a few MB of activations;
    one pass over 4000 rows of 32 replicas at once was 1.4x slower here).
    """
    batch_size = batch_size or max(64, EVAL_REPLICA_ROWS // ens.size)
    total = torch.zeros(ens.size, dtype=torch.float64)
    wrong = torch.zeros(ens.size, dtype=torch.float64)
    classify = not torch.is_floating_point(y)
    for i in range(0, len(X), batch_size):
        out = ens.forward(X[i:i + batch_size])
        yb = y[i:i + batch_size]
        total += replica_losses(loss_name, out, yb.expand(ens.size, *yb.shape), n_classes).double() * len(yb)
        if classify:
            wrong += (out.max(-1).indices != yb).sum(-1).double()  # max: first index of ties, like argmax
    n = max(len(X), 1)
    return (total / n).numpy(), ((wrong / n).numpy() if classify else np.full(ens.size, np.nan))


def train_ensemble(build: Callable[[], nn.Module], seeds: list[int], X: torch.Tensor, y: torch.Tensor,
                   cfg: TrainConfig, X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                   n_classes: int | None = None, data_seeds: list[int] | None = None,
                   progress: Progress = SILENT, desc: str = "ensemble", workers: int = 1,
                   ) -> tuple[Ensemble, EnsembleHistory]:
    """Train ``len(seeds)`` replicas of ``build()`` at once; replica r starts from ``seeded(build, seeds[r])``.

    ``data_seeds=None`` shares one data order (``cfg.seed``) among replicas; a list gives replica r the
    order of ``cfg.seed = data_seeds[r]``. ``workers > 1`` runs the ensemble on that many torch threads
    (its batched ops split across cores; on 2 cores this matched or beat two half-ensembles in Python
    threads or processes at every size measured, see the README); every replica follows the same
    trajectory either way.
    """
    models = [seeded(build, s) for s in seeds]
    ens = Ensemble(models, getattr(torch, cfg.dtype))
    return ens, fit_ensemble(ens, X, y, cfg, X_test, y_test, n_classes, data_seeds, progress, desc, workers)


def _rows(data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``data[idx]`` for an index tensor of any shape (index_select is several times faster on CPU)."""
    return data.index_select(0, idx.reshape(-1)).view(*idx.shape, *data.shape[1:])


def fit_ensemble(ens: Ensemble, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                 n_classes: int | None = None, data_seeds: list[int] | None = None,
                 progress: Progress = SILENT, desc: str = "ensemble", workers: int = 1) -> EnsembleHistory:
    """Train an existing :class:`Ensemble` in place (see :func:`train_ensemble`).

    ``workers > 1``: the steps run on that many torch threads, or on one when timing finds that faster
    (a busy machine; :class:`overparam.train.parallel.ThreadTuner`). ``workers=1`` leaves torch's thread
    count as it is.
    """
    keep_freed_memory()
    dtype = getattr(torch, cfg.dtype)
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
    batch, per_epoch, total = cfg.plan(n)
    eval_every = cfg.eval_every or per_epoch
    shared = data_seeds is None or batch == n
    gens = [torch.Generator().manual_seed(s) for s in ([cfg.seed] if shared else data_seeds)]
    opt = make_optimizer(cfg, list(ens.params.values()), foreach=True)
    # a constant schedule needs no scheduler (its per-step bookkeeping is measurable on small nets)
    sched = (None if cfg.schedule == "constant"
             else torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.schedule, total)))

    def replica_loss(p, b, xb, yb):
        return loss_fn(functional_call(ens.base, (p, b), (xb,)), yb)

    # ReLU MLPs train through a hand-derived step (diverged replicas' gradients are garbage there, but
    # their parameters are restored after every step like below). Gradient hooks registered on the stacked
    # parameters (Tensor.register_hook) need autograd, so they keep the autograd path.
    hooked = any(getattr(p, "_backward_hooks", None) for p in ens.params.values())
    fused = (StackedMLPStep(ens.params, [(w, b) for w, b, _ in ens._mlp_layers], cfg.loss, n_classes)
             if ens._mlp_layers is not None and fused_supports(ens._template, cfg.loss) and not hooked else None)
    if ens._mlp_layers is not None:
        def batched_loss(params, buffers, xb, yb):
            out = ens.forward(xb, shared)
            return replica_losses(cfg.loss, out, yb if not shared else yb.expand(R, *yb.shape), n_classes)
    else:
        batched_loss = vmap(replica_loss, in_dims=(0, 0, None if shared else 0, None if shared else 0))
    hist = EnsembleHistory()
    alive = torch.ones(R, dtype=torch.bool)
    all_alive = True
    diverged_at = np.full(R, -1)
    start, orders = time.perf_counter(), None

    def record(step: int) -> None:
        tr = evaluate_ensemble(ens, X, y, cfg.loss, n_classes)
        te = (evaluate_ensemble(ens, X_test, y_test, cfg.loss, n_classes) if X_test is not None
              else (np.full(R, np.nan), np.full(R, np.nan)))
        hist.step.append(step)
        for key, value in zip(CURVES, (*tr, *te)):
            value = value.copy()
            value[~alive.numpy()] = np.nan
            getattr(hist, key).append(value)

    record(0)
    with progress.bar(total, desc) as bar, ThreadTuner(workers) as tuner:
        for step in range(total):
            with tuner.step(step):  # on all workers, or on one thread when that is faster
                k = step % per_epoch
                if k == 0:
                    orders = torch.stack([torch.randperm(n, generator=g) if batch < n else torch.arange(n)
                                          for g in gens])
                idx = orders[0, k * batch:(k + 1) * batch] if shared else orders[:, k * batch:(k + 1) * batch]
                xb, yb = _rows(X, idx), _rows(y, idx)
                if fused is not None:  # forward, losses and gradients in one hand-derived pass
                    if shared:
                        xb, yb = xb.flatten(1).expand(R, -1, -1), yb.expand(R, *yb.shape)
                    losses = fused.step(xb, yb)
                else:
                    losses = batched_loss(ens.params, ens.buffers, xb, yb)
                finite = torch.isfinite(losses.detach())
                if not bool(finite.all()):
                    bad = alive & ~finite
                    if bad.any():
                        diverged_at[bad.numpy()] = step
                        alive &= ~bad
                        all_alive = False
                        if not alive.any():
                            break
                if fused is None:
                    opt.zero_grad(set_to_none=True)
                    total_loss = losses.sum() if all_alive else torch.where(alive, losses, 0.0).sum()
                    total_loss.backward()
                for name, mask in ens.masks.items():
                    ens.params[name].grad.mul_(mask)
                frozen = None if all_alive else {name: p.detach()[~alive].clone() for name, p in ens.params.items()}
                opt.step()
                if sched is not None:
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
                    all_alive = False
                    if not alive.any():
                        break
    hist.diverged = diverged_at >= 0
    hist.diverged_at = diverged_at
    hist.seconds = time.perf_counter() - start
    return hist
