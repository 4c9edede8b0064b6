"""How one step of a stacked ensemble computes its losses and gradients: three strategies, one interface.

A step strategy is called with a batch and leaves in every stacked parameter's ``.grad`` the gradient of
the sum of the live replicas' losses (replica r's slice is the gradient of its own loss); it returns the
per-replica losses. :func:`choose_step` picks the fastest strategy that computes what was asked:

========================  ======================================================  =============================
strategy                  computes                                                used for
========================  ======================================================  =============================
:class:`FusedMLPStep`     a hand-derived forward/backward into reused buffers     ReLU MLPs, named losses,
                          (:mod:`overparam.train.fused`, ~20 % faster)            no penalty, no gradient hooks
:class:`AutogradStep`     autograd through batched matmuls (MLPs) or              everything else: any module,
                          ``vmap(functional_call)`` (any module)                  custom losses, penalties
========================  ======================================================  =============================
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from overparam.train.fused import StackedMLPStep
from overparam.train.fused import supports as fused_supports


def replica_losses(loss_name: str, out: torch.Tensor, y: torch.Tensor, n_classes: int | None) -> torch.Tensor:
    """Mean loss of each replica, as :func:`overparam.train.loss_function` computes it: out (R, N, C), y (R, N[, k])."""
    R, N = out.shape[:2]
    if loss_name == "cross_entropy":
        # classes on dim 1 ((R, C, N) as a view): PyTorch's kernel is several times faster this way round
        # than on (R*N, C) rows of only C entries
        return nn.functional.cross_entropy(out.transpose(1, 2), y.reshape(R, N), reduction="none").mean(1)
    target = nn.functional.one_hot(y, n_classes).to(out.dtype) if n_classes is not None else y.reshape(out.shape)
    return ((out - target) ** 2).reshape(R, -1).mean(1)


class FusedMLPStep:
    """Stacked ReLU MLPs under a named loss: gradients without autograd (diverged replicas' gradients are
    garbage here; the engine restores their parameters after the update)."""

    def __init__(self, ens, loss_name: str, n_classes: int | None):
        self.size = ens.size
        self.step_fn = StackedMLPStep(ens.params, [(w, b) for w, b, _ in ens.mlp_layers], loss_name, n_classes)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, shared: bool, alive: torch.Tensor | None) -> torch.Tensor:
        if shared:
            xb, yb = xb.flatten(1).expand(self.size, -1, -1), yb.expand(self.size, *yb.shape)
        return self.step_fn.step(xb, yb)


class AutogradStep:
    """Outputs through the ensemble's forward (batched matmuls or vmap), the per-replica loss, an optional
    per-replica penalty, then autograd on the sum over live replicas."""

    def __init__(self, ens, loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 penalty: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
                 penalty_weight: torch.Tensor | None = None):
        self.ens, self.loss_of, self.penalty = ens, loss_of, penalty
        self.penalty_weight = penalty_weight

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, shared: bool, alive: torch.Tensor | None) -> torch.Tensor:
        ens = self.ens
        out = ens.forward(xb, shared)
        losses = self.loss_of(out, yb.expand(ens.size, *yb.shape) if shared else yb)
        total = losses
        if self.penalty is not None:
            extra = self.penalty(ens.params)
            total = losses + (extra if self.penalty_weight is None else self.penalty_weight * extra)
        for p in ens.params.values():
            p.grad = None
        (total.sum() if alive is None else torch.where(alive, total, 0.0).sum()).backward()
        return total.detach()


def choose_step(ens, loss_name: str, n_classes: int | None, loss_fn=None, penalty=None, penalty_weight=None):
    """The fastest strategy that computes what is asked (see the module docstring)."""
    hooked = any(getattr(p, "_backward_hooks", None) for p in ens.params.values())
    if (ens.mlp_layers is not None and loss_fn is None and penalty is None and not hooked
            and fused_supports(ens.template, loss_name)):
        return FusedMLPStep(ens, loss_name, n_classes)
    if loss_fn is None:
        def loss_fn(out, y):
            return replica_losses(loss_name, out, y, n_classes)
    return AutogradStep(ens, loss_fn, penalty, penalty_weight)
