"""Train R replicas of one architecture in one batched computation (torch.func + vmap).

Each replica has its own initialization seed and, by choice, its own data order (``data_seeds``)
or the shared order of ``cfg.seed``. The replicas' parameters are stacked along a leading axis and
a single optimizer (SGD, momentum, Adam, weight decay: all elementwise) updates the stack, so every
replica follows exactly the trajectory it would follow alone under :func:`overparam.train.train`
(tested to float tolerance). A replica whose loss turns NaN/inf is recorded as diverged and frozen;
the others go on. How a step computes its gradients is a strategy (:mod:`overparam.train.steps`): the
hand-derived step for stacked ReLU MLPs, or autograd through batched matmuls or ``vmap(functional_call)``.

Per replica, besides its seed and data order: a learning rate, a weight decay and a penalty weight
(:class:`PerReplica`), so a sweep over those trains as one stack.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from overparam.models import MLP, seeded
from overparam.train.loop import (Callback, StepInfo, TrainConfig, as_callbacks, epoch_orders, make_optimizer,
                                  make_scheduler)
from overparam.train.parallel import ThreadTuner, keep_freed_memory
from overparam.train.progress import SILENT, Progress
from overparam.train.steps import choose_step, replica_losses


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
        self.template = models[0]
        self.size = len(models)
        self.masks = {k: m.to(dtype) for k, m in (masks or {}).items()}

        def forward(p, b, x):
            return functional_call(self.base, (p, b), (x,))

        self._forward = forward
        # MLPs take a fast path: batched matmuls on the stacked weights instead of vmap(functional_call),
        # whose per-call overhead dominates for the small networks this engine is for.
        self.mlp_layers = _mlp_layers(models[0]) if isinstance(models[0], MLP) and not self.buffers else None

    def forward(self, x: torch.Tensor, shared: bool = True) -> torch.Tensor:
        """Outputs of every replica: x (N, ...) shared, or (R, N, ...) one batch per replica -> (R, N, out)."""
        if self.mlp_layers is not None:
            h = x.flatten(1).expand(self.size, -1, -1) if shared else x.flatten(2)
            for weight, bias, act in self.mlp_layers:
                W = self.params[weight].transpose(1, 2)
                h = torch.baddbmm(self.params[bias].unsqueeze(1), h, W) if bias else torch.bmm(h, W)
                if isinstance(act, nn.ReLU):
                    h = torch.relu_(h)  # in place: the matmul's backward does not need its output
                elif act is not None:
                    h = act(h)
            return h
        return vmap(self._forward, in_dims=(0, 0, None if shared else 0))(self.params, self.buffers, x)

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def replica(self, r: int) -> nn.Module:
        model = copy.deepcopy(self.template)
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


@torch.no_grad()
def evaluate_ensemble(ens: Ensemble, X: torch.Tensor, y: torch.Tensor, loss_name: str, n_classes: int | None,
                      batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and error rate of each replica over (X, y).

    Rows go through in chunks of ``batch_size`` (default: about 32k replica-rows, a few MB of activations;
    one pass over 4000 rows of 32 replicas at once was 1.4x slower here).
    """
    batch_size = batch_size or max(64, EVAL_REPLICA_ROWS // ens.size)
    total = torch.zeros(ens.size, dtype=torch.float64, device=ens.device)
    wrong = torch.zeros(ens.size, dtype=torch.float64, device=ens.device)
    classify = not torch.is_floating_point(y)
    for i in range(0, len(X), batch_size):
        out = ens.forward(X[i:i + batch_size])
        yb = y[i:i + batch_size]
        total += replica_losses(loss_name, out, yb.expand(ens.size, *yb.shape), n_classes).double() * len(yb)
        if classify:
            wrong += (out.max(-1).indices != yb).sum(-1).double()  # max: first index of ties, like argmax
    n = max(len(X), 1)
    return (total / n).cpu().numpy(), ((wrong / n).cpu().numpy() if classify else np.full(ens.size, np.nan))


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


@dataclass
class PerReplica:
    """Hyperparameters that differ between replicas (each a sequence of one value per replica, or None).

    ``lr`` replaces ``cfg.lr`` (exactly: each replica's update is scaled, so momentum and Adam states are those
    of its own rate), ``weight_decay`` replaces ``cfg.weight_decay`` (added to the gradient, as torch's optimizers
    do), ``penalty_weight`` multiplies the ``penalty`` of :func:`fit_ensemble`."""

    lr: Sequence[float] | None = None
    weight_decay: Sequence[float] | None = None
    penalty_weight: Sequence[float] | None = None

    def tensors(self, R: int, dtype, device) -> dict[str, torch.Tensor | None]:
        out = {}
        for name in ("lr", "weight_decay", "penalty_weight"):
            values = getattr(self, name)
            if values is not None and len(values) != R:
                raise ValueError(f"per-replica {name} has {len(values)} values for {R} replicas")
            out[name] = None if values is None else torch.as_tensor(values, dtype=dtype, device=device)
        return out


def _per_replica_shape(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (p.dim() - 1)))


class _Batches:
    """The rows of each step: one shared data order, or one order per replica (``data_seeds``)."""

    def __init__(self, n: int, batch: int, per_epoch: int, seed: int, data_seeds, device):
        self.shared = data_seeds is None or batch == n
        self.batch, self.per_epoch, self.device = batch, per_epoch, device
        self.orders = [epoch_orders(n, batch, torch.Generator().manual_seed(s))
                       for s in ([seed] if self.shared else data_seeds)]
        self.current = None

    def indices(self, step: int) -> torch.Tensor:
        k = step % self.per_epoch
        if k == 0:
            self.current = torch.stack([next(o) for o in self.orders]).to(self.device)
        rows = self.current[:, k * self.batch:(k + 1) * self.batch]
        return rows[0] if self.shared else rows


class _Survivors:
    """Which replicas are still finite; diverged ones are frozen where they stopped."""

    def __init__(self, R: int, device):
        self.alive = torch.ones(R, dtype=torch.bool, device=device)
        self.all_alive = True
        self.diverged_at = np.full(R, -1)

    def drop(self, bad: np.ndarray, step: int) -> bool:
        """Mark replicas ``bad`` (numpy bool) as diverged at ``step``; False when none is left."""
        bad = bad & self.alive.cpu().numpy()
        if bad.any():
            self.diverged_at[bad] = step
            self.alive &= ~torch.from_numpy(bad).to(self.alive.device)
            self.all_alive = False
        return bool(self.alive.any())

    def mask(self) -> torch.Tensor | None:
        return None if self.all_alive else self.alive

    def freeze(self, params: dict[str, torch.Tensor]):
        return None if self.all_alive else {k: p.detach()[~self.alive].clone() for k, p in params.items()}

    @torch.no_grad()
    def restore(self, params: dict[str, torch.Tensor], frozen) -> None:
        if frozen is not None:
            for k, p in params.items():
                p[~self.alive] = frozen[k]


def fit_ensemble(ens: Ensemble, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                 n_classes: int | None = None, data_seeds: list[int] | None = None,
                 progress: Progress = SILENT, desc: str = "ensemble", workers: int = 1, *,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 penalty: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
                 per_replica: PerReplica | None = None,
                 callbacks: Sequence[Callback | Callable] = ()) -> EnsembleHistory:
    """Train an existing :class:`Ensemble` in place (see :func:`train_ensemble`).

    ``loss_fn(outputs (R, N, ...), targets (R, N, ...)) -> (R,)`` replaces the named loss; ``penalty(params)
    -> (R,)`` is added to each replica's loss (times ``per_replica.penalty_weight``); ``callbacks`` see every
    update (:class:`overparam.train.Callback`). ``workers > 1``: the steps run on that many torch threads, or
    on one when timing finds that faster (:class:`overparam.train.parallel.ThreadTuner`).
    """
    keep_freed_memory()
    dtype, device, R = getattr(torch, cfg.dtype), ens.device, ens.size
    X, y, X_test, y_test = (None if t is None else t.to(device, dtype) if torch.is_floating_point(t) else
                            t.to(device) for t in (X, y, X_test, y_test))
    if data_seeds is not None and len(data_seeds) != R:
        raise ValueError(f"data_seeds has {len(data_seeds)} entries for {R} replicas")
    hyper = (per_replica or PerReplica()).tensors(R, dtype, device)
    if hyper["weight_decay"] is not None and cfg.weight_decay:
        raise ValueError("give weight decay either in cfg.weight_decay or per replica, not both")
    batch, per_epoch, total = cfg.plan(len(X))
    eval_every = cfg.eval_every or per_epoch
    batches = _Batches(len(X), batch, per_epoch, cfg.seed, data_seeds, device)
    step_fn = choose_step(ens, cfg.loss, n_classes, loss_fn, penalty, hyper["penalty_weight"])
    # a per-replica rate scales each replica's update, so the optimizer steps at rate 1
    opt = make_optimizer(dataclasses.replace(cfg, lr=1.0) if hyper["lr"] is not None else cfg,
                         list(ens.params.values()), foreach=True)
    sched = make_scheduler(cfg, opt, total)
    hooks = as_callbacks(callbacks)
    hist, survivors, start = EnsembleHistory(), _Survivors(R, device), time.perf_counter()
    evaluate_into(hist, ens, cfg, n_classes, (X, y), (X_test, y_test), survivors.alive, 0)
    with progress.bar(total, desc) as bar, ThreadTuner(workers) as tuner:
        for step in range(total):
            with tuner.step(step):  # on all workers, or on one thread when that is faster
                idx = batches.indices(step)
                losses = step_fn(_rows(X, idx), _rows(y, idx), batches.shared, survivors.mask())
                if not bool(torch.isfinite(losses).all()) and not survivors.drop(
                        ~torch.isfinite(losses).cpu().numpy(), step):
                    break
                _adjust_gradients(ens, hyper["weight_decay"])
                info = StepInfo(step + 1, losses, ens, opt) if hooks else None
                for hook in hooks:
                    hook.before_update(info)
                frozen, before = survivors.freeze(ens.params), _copy_if(ens.params, hyper["lr"])
                opt.step()
                if sched is not None:
                    sched.step()
                _scale_updates(ens.params, before, hyper["lr"])
                survivors.restore(ens.params, frozen)
                for hook in hooks:
                    hook.after_update(info)
            bar.update(1)
            if (step + 1) % eval_every == 0 or step + 1 == total:
                evaluate_into(hist, ens, cfg, n_classes, (X, y), (X_test, y_test), survivors.alive, step + 1)
                if not survivors.drop(~np.isfinite(hist.train_loss[-1]), step + 1):
                    break
    hist.diverged, hist.diverged_at = survivors.diverged_at >= 0, survivors.diverged_at
    hist.seconds = time.perf_counter() - start
    return hist


def evaluate_into(hist: EnsembleHistory, ens: Ensemble, cfg: TrainConfig, n_classes, train, test,
                  alive: torch.Tensor, step: int) -> None:
    """Append the replicas' train and test loss and error at ``step`` (NaN for diverged replicas)."""
    R = ens.size
    tr = evaluate_ensemble(ens, *train, cfg.loss, n_classes)
    te = (evaluate_ensemble(ens, *test, cfg.loss, n_classes) if test[0] is not None
          else (np.full(R, np.nan), np.full(R, np.nan)))
    dead = ~alive.cpu().numpy()
    hist.step.append(step)
    for key, value in zip(CURVES, (*tr, *te)):
        value = value.copy()
        value[dead] = np.nan
        getattr(hist, key).append(value)


def _adjust_gradients(ens: Ensemble, weight_decay: torch.Tensor | None) -> None:
    """Gradient masks (entries that must keep their value) and per-replica weight decay."""
    for name, mask in ens.masks.items():
        ens.params[name].grad.mul_(mask)
    if weight_decay is not None:
        with torch.no_grad():
            for p in ens.params.values():
                p.grad.add_(_per_replica_shape(weight_decay, p) * p)


def _copy_if(params: dict[str, torch.Tensor], lr: torch.Tensor | None):
    return None if lr is None else {k: p.detach().clone() for k, p in params.items()}


@torch.no_grad()
def _scale_updates(params: dict[str, torch.Tensor], before, lr: torch.Tensor | None) -> None:
    if before is not None:
        for k, p in params.items():
            p.copy_(torch.lerp(before[k], p, _per_replica_shape(lr, p)))
