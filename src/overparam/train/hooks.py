"""Callbacks around the optimizer steps of an unchanged trainer (``train``, ``fit_ensemble``, your own loop).

They use PyTorch's global optimizer step pre/post hooks, filtered to the optimizers that hold the given
tensors, so they fire whether the gradients came from autograd or from the ensemble engine's hand-derived
MLP step. ``fn`` gets the number of the step (1, 2, ...) taken on these tensors since the block began.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook


def parameters_of(target) -> dict[str, torch.Tensor]:
    """Parameters by name of a module, or a dict of tensors as it is (e.g. ``Ensemble.params``)."""
    return dict(target.named_parameters()) if isinstance(target, nn.Module) else dict(target)


@contextmanager
def after_each_step(target, fn: Callable[[int], None]) -> Iterator[None]:
    """Call ``fn(step)`` after every optimizer step taken on ``target``'s parameters (removed on exit)."""
    with _each_step(target, fn, register_optimizer_step_post_hook):
        yield


@contextmanager
def before_each_step(target, fn: Callable[[int], None]) -> Iterator[None]:
    """Call ``fn(step)`` just before every optimizer step on ``target``'s parameters, gradients in place."""
    with _each_step(target, fn, register_optimizer_step_pre_hook):
        yield


@contextmanager
def _each_step(target, fn: Callable[[int], None], register) -> Iterator[None]:
    ids = {id(p) for p in parameters_of(target).values()}
    count = [0]

    def hook(optimizer, args, kwargs):
        if any(id(p) in ids for g in optimizer.param_groups for p in g["params"]):
            count[0] += 1
            fn(count[0])

    handle = register(hook)
    try:
        yield
    finally:
        handle.remove()
