"""Dense ground truth for small models: the full Hessian, Gauss-Newton matrix, Jacobian and NTK.

Every matrix-free instrument in overparam is tested against these, and a user can check an instrument on a
small member of their own model family the same way. They differentiate the flat parameter vector with
``torch.func`` (``hessian``, ``jacrev``) independently of the instruments' code paths, on the same data
conventions (:mod:`overparam.measure.data`: (X, y) or any batches with ``inputs_of``; eval semantics; the mean
over all examples). Memory grows as P^2 (and the Jacobian as N x outputs x P): for models of up to a few
thousand parameters.

Why not ``torch.func.hessian``: through ``nn.MultiheadAttention`` with masks it disagrees with finite differences
(torch 2.13; relative error ~0.1 on a tiny transformer), while plain double backward agrees to 1e-8.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.autograd.functional import hessian, jacobian
from torch.func import functional_call

from overparam.measure.data import batches, eval_semantics, model_device, twice_differentiable
from overparam.measure.hessian_operator import resolve_loss
from overparam.measure.params import ParamsLike, select_params


def _flat_setup(model: nn.Module, params: ParamsLike, dtype: torch.dtype, device):
    names = select_params(model, params)
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]
    sizes = [named[n].numel() for n in names]
    theta = torch.cat([named[n].detach().to(device, dtype).reshape(-1) for n in names])
    fixed = {n: p.detach().to(device, dtype) for n, p in model.named_parameters() if n not in names}
    fixed.update({n: b.to(device, dtype) if torch.is_floating_point(b) else b.to(device)
                  for n, b in model.named_buffers()})

    def call(flat: torch.Tensor, batch):
        state = dict(zip(names, (t.view(s) for t, s in zip(torch.split(flat, sizes), shapes))))
        state.update(fixed)
        return functional_call(model, state, batch.args, batch.kwargs)

    return theta, call


def _batches(model, data, dtype, device, inputs_of, batch_size):
    return list(batches(data, batch_size, dtype, device, inputs_of))


def dense_hessian(model: nn.Module, loss_fn, data, *, inputs_of: Callable | None = None, params: ParamsLike = None,
                  dtype: torch.dtype = torch.float64, device=None, batch_size: int = 1 << 30) -> torch.Tensor:
    """The P x P Hessian of the mean loss over all examples (eval semantics)."""
    device = model_device(model, device)
    fn = resolve_loss(loss_fn)
    theta, call = _flat_setup(model, params, dtype, device)
    parts = _batches(model, data, dtype, device, inputs_of, batch_size)
    n = sum(b.n for b in parts)
    with eval_semantics(model), twice_differentiable():
        return sum(b.n * hessian(lambda t, b=b: fn(call(t, b), b.target), theta) for b in parts) / n


def dense_jacobian(model: nn.Module, data, *, inputs_of: Callable | None = None, params: ParamsLike = None,
                   dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The Jacobian of every output with respect to the parameters: (N, *output shape, P)."""
    device = model_device(model, device)
    theta, call = _flat_setup(model, params, dtype, device)
    parts = _batches(model, data, dtype, device, inputs_of, 1 << 30)
    with eval_semantics(model), twice_differentiable():
        return torch.cat([jacobian(lambda t, b=b: call(t, b), theta) for b in parts])


def dense_ggn(model: nn.Module, loss_fn, data, *, inputs_of: Callable | None = None, params: ParamsLike = None,
              dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The generalized Gauss-Newton matrix J^T H_out J of the mean loss (H_out: the loss's Hessian in outputs)."""
    device = model_device(model, device)
    fn = resolve_loss(loss_fn)
    theta, call = _flat_setup(model, params, dtype, device)
    parts = _batches(model, data, dtype, device, inputs_of, 1 << 30)
    n = sum(b.n for b in parts)
    total = torch.zeros(theta.numel(), theta.numel(), dtype=dtype, device=device)
    with eval_semantics(model), twice_differentiable():
        for b in parts:
            J = jacobian(lambda t: call(t, b), theta)
            out = call(theta, b).detach()
            J = J.reshape(-1, theta.numel())
            H_out = hessian(lambda z: fn(z.reshape(out.shape), b.target), out.reshape(-1))
            total += b.n * (J.T @ H_out @ J)
    return total / n


def dense_ntk(model: nn.Module, x1, x2=None, *, params: ParamsLike = None, dtype: torch.dtype = torch.float64,
              device=None) -> torch.Tensor:
    """The empirical NTK J(x1) J(x2)^T as an (N1, N2, O, O) tensor (outputs flattened to O)."""
    device = model_device(model, device)
    J1 = dense_jacobian(model, (x1, torch.zeros(len(x1))), params=params, dtype=dtype, device=device)
    J2 = J1 if x2 is None else dense_jacobian(model, (x2, torch.zeros(len(x2))), params=params, dtype=dtype,
                                              device=device)
    J1, J2 = J1.reshape(len(J1), -1, J1.shape[-1]), J2.reshape(len(J2), -1, J2.shape[-1])
    return torch.einsum("aip,bjp->abij", J1, J2)


__all__ = ["dense_hessian", "dense_ggn", "dense_jacobian", "dense_ntk"]
