"""Pruning with masks kept outside the weights, rewinding, and the controls of the lottery-ticket literature.

A *mask* is a dict ``parameter name -> bool tensor`` of the parameter's shape (True = the weight is kept).
Masks live beside the model, never inside it: the model stays a plain ``nn.Module`` that any trainer,
instrument or study can use. :func:`enforce_masks` keeps them applied while an unchanged trainer runs
(:func:`overparam.train.train` or the ensemble engine): it zeroes the pruned entries, masks their gradients
(so momentum and Adam moments of a pruned weight stay exactly 0) and re-applies the mask after *every*
optimizer step through PyTorch's public optimizer step hook -- pruned weights are exactly 0 after each step
whatever the optimizer, momentum or weight decay.

Pruning (Frankle & Carbin 2019; open_lth's ``sparse_global``): each round removes ``fraction`` of the weights
that *remain*, by smallest magnitude, with exact counts (``round(fraction * remaining)``; ties broken by
position, so the result is deterministic). ``scope="global"`` ranks all pruned layers together,
``"layerwise"`` prunes each layer by the same fraction; ``layer_fractions`` gives some layers their own rate
(LeNet's output layer at 10%): those are always pruned on their own. Biases are not pruned by default.

Rewinding: :func:`snapshot` copies a state dict, :func:`rewind` loads it back bit for bit and applies the
mask (rewind to initialization = the step-0 snapshot; late rewinding = the step-k snapshot, Frankle et al.
2020). Controls: :func:`random_masks_like` (random pruning with the same per-layer counts) and
:func:`reinitialize` (the ticket's mask on a fresh initialization).
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from overparam.models import seeded
from overparam.train import Diverged, Ensemble, EnsembleHistory, History, TrainConfig, evaluate_ensemble, train
from overparam.train.ensemble import fit_ensemble
from overparam.train.hooks import after_each_step, before_each_step, parameters_of
from overparam.train.progress import SILENT, Progress

Masks = dict[str, torch.Tensor]
SCOPES = ("global", "layerwise")


# ----------------------------------------------------------------------------------------------- masks

def prunable_names(model: nn.Module, include_bias: bool = False) -> list[str]:
    """Names of the weight matrices/kernels (ndim >= 2); biases and other vectors only if ``include_bias``."""
    return [n for n, p in model.named_parameters() if p.ndim >= 2 or include_bias]


def dense_masks(model: nn.Module, names: list[str] | None = None) -> Masks:
    """All-True masks for ``names`` (default: :func:`prunable_names`)."""
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in (names or prunable_names(model))}


def count_kept(masks: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(kept entries, total entries) over the masked tensors."""
    return sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())


def fraction_remaining(masks: Mapping[str, torch.Tensor]) -> float:
    kept, total = count_kept(masks)
    return kept / max(total, 1)


@torch.no_grad()
def apply_masks(target, masks: Mapping[str, torch.Tensor], held: Mapping[str, torch.Tensor] | None = None):
    """Set the masked-out entries of ``target``'s parameters to 0 (or to ``held[name]``), in place."""
    params = parameters_of(target)
    for name, mask in masks.items():
        p = params[name]
        m = mask.to(device=p.device, dtype=torch.bool)
        if held is not None and name in held:
            p.copy_(torch.where(m, p, held[name].to(p)))
        else:
            p.masked_fill_(~m, 0.0)
    return target


def _n_prune(kept: int, fraction: float) -> int:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: must be in [0, 1], got {fraction}")
    return min(kept, int(math.floor(fraction * kept + 0.5)))


def _prune_by_score(scores: list[torch.Tensor], masks: list[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """Drop the ``round(fraction * kept)`` kept entries of lowest score, pooled over the given tensors."""
    flat_s = torch.cat([s.detach().reshape(-1).double() for s in scores])
    flat_m = torch.cat([m.reshape(-1).bool() for m in masks])
    k = _n_prune(int(flat_m.sum()), fraction)
    if k == 0:
        return [m.clone().bool() for m in masks]
    alive = torch.nonzero(flat_m).reshape(-1)
    order = torch.argsort(flat_s[alive], stable=True)      # ties: lowest position first
    new = flat_m.clone()
    new[alive[order[:k]]] = False
    out, start = [], 0
    for m in masks:
        out.append(new[start:start + m.numel()].view_as(m))
        start += m.numel()
    return out


def _prune(scores: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], fraction: float, scope: str,
           layer_fractions: Mapping[str, float] | None) -> Masks:
    if scope not in SCOPES:
        raise ValueError(f"scope: {scope!r} is not allowed; choose one of: {', '.join(SCOPES)}")
    layer_fractions = dict(layer_fractions or {})
    unknown = set(layer_fractions) - set(masks)
    if unknown:
        raise ValueError(f"layer_fractions: {sorted(unknown)} are not masked tensors ({sorted(masks)})")
    out: Masks = {}
    for name, f in layer_fractions.items():
        out[name] = _prune_by_score([scores[name]], [masks[name]], f)[0]
    rest = [n for n in masks if n not in layer_fractions]
    if scope == "global" and rest:
        out.update(zip(rest, _prune_by_score([scores[n] for n in rest], [masks[n] for n in rest], fraction)))
    else:
        for n in rest:
            out[n] = _prune_by_score([scores[n]], [masks[n]], fraction)[0]
    return {n: out[n] for n in masks}


def magnitude_prune(weights, masks: Mapping[str, torch.Tensor], fraction: float = 0.2, scope: str = "global",
                    layer_fractions: Mapping[str, float] | None = None) -> Masks:
    """New masks with ``fraction`` of the remaining weights of smallest |w| removed (exact counts).

    ``weights``: a module or a dict name -> tensor (the trained weights); only the names in ``masks`` are pruned.
    """
    params = parameters_of(weights)
    return _prune({n: params[n].abs() for n in masks}, masks, fraction, scope, layer_fractions)


def random_prune(masks: Mapping[str, torch.Tensor], fraction: float = 0.2, scope: str = "global",
                 layer_fractions: Mapping[str, float] | None = None,
                 generator: torch.Generator | None = None) -> Masks:
    """Like :func:`magnitude_prune` with random scores: ``fraction`` of the remaining weights, chosen at random."""
    gen = generator or torch.Generator().manual_seed(0)
    scores = {n: torch.rand(m.shape, generator=gen, dtype=torch.float64) for n, m in masks.items()}
    return _prune(scores, masks, fraction, scope, layer_fractions)


def random_masks_like(masks: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> Masks:
    """Random masks keeping exactly as many entries per tensor as ``masks`` (the random-pruning control)."""
    gen = generator or torch.Generator().manual_seed(0)
    out: Masks = {}
    for n, m in masks.items():
        new = torch.zeros(m.numel(), dtype=torch.bool)
        new[torch.randperm(m.numel(), generator=gen)[:int(m.sum())]] = True
        out[n] = new.view(m.shape)
    return out


def stack_masks(per_replica: list[Mapping[str, torch.Tensor]]) -> Masks:
    """Masks of R replicas stacked along a leading axis, the layout of :class:`overparam.train.Ensemble`."""
    return {n: torch.stack([m[n] for m in per_replica]) for n in per_replica[0]}


def unstack_masks(stacked: Mapping[str, torch.Tensor], r: int) -> Masks:
    return {n: m[r].clone() for n, m in stacked.items()}


# ------------------------------------------------------------------------------ keeping masks applied

@contextmanager
def enforce_masks(target, masks: Mapping[str, torch.Tensor],
                  held: Mapping[str, torch.Tensor] | None = None) -> Iterator[None]:
    """Keep ``masks`` applied while training ``target`` (a module, or ``Ensemble.params`` with stacked masks).

    Entries outside the mask are set to 0 -- or to ``held[name]``, e.g. frozen values of the weights outside a
    ticket -- before training, their gradients are zeroed just before each optimizer step, and they are reset
    after it, so they are exactly 0 (or exactly ``held``) whatever the optimizer, momentum or weight decay.
    Both happen in optimizer step hooks, so they hold for any trainer that steps a torch optimizer, whether its
    gradients come from autograd or not (the ensemble engine's MLP fast path computes them by hand).
    """
    params = parameters_of(target)
    masks = {n: m.to(device=params[n].device, dtype=torch.bool) for n, m in masks.items()}
    held = {n: h.detach().clone() for n, h in (held or {}).items()}
    apply_masks(params, masks, held)

    def zero_masked_gradients(step: int) -> None:
        for n, m in masks.items():
            if params[n].grad is not None:
                params[n].grad.mul_(m.to(params[n].grad.dtype))

    with (before_each_step(params, zero_masked_gradients),
          after_each_step(params, lambda step: apply_masks(params, masks, held))):
        yield


def train_masked(model: nn.Module, masks: Mapping[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor,
                 cfg: TrainConfig, X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                 n_classes: int | None = None, progress: Progress = SILENT, desc: str = "train (masked)",
                 held: Mapping[str, torch.Tensor] | None = None) -> History:
    """:func:`overparam.train.train` with ``masks`` enforced throughout (see :func:`enforce_masks`)."""
    model.to(getattr(torch, cfg.dtype))
    with enforce_masks(model, masks, held):
        return train(model, X, y, cfg, X_test, y_test, n_classes, progress, desc)


@dataclass
class Tracked:
    """Curves of an ensemble trained under masks: ``loss[name]``/``error[name]`` of shape (evaluations, R)."""

    step: list[int] = field(default_factory=list)
    loss: dict[str, np.ndarray] = field(default_factory=dict)
    error: dict[str, np.ndarray] = field(default_factory=dict)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)   # step -> stacked params
    history: EnsembleHistory | None = None


def fit_masked_ensemble(ens: Ensemble, masks: Mapping[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor,
                        cfg: TrainConfig, evals: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                        n_classes: int | None, eval_every: int, data_seeds: list[int] | None = None,
                        held: Mapping[str, torch.Tensor] | None = None, snapshot_steps: tuple[int, ...] = (),
                        progress: Progress = SILENT, desc: str = "masked ensemble") -> Tracked:
    """Train an :class:`Ensemble` (one mask per replica, stacked) with the unchanged engine, under
    :func:`enforce_masks`, evaluating every set in ``evals`` at step 0 and every ``eval_every`` steps and
    copying the stacked parameters after the steps in ``snapshot_steps`` (for late rewinding)."""
    dtype = getattr(torch, cfg.dtype)
    evals = {k: (Xe.to(dtype), ye) for k, (Xe, ye) in evals.items()}
    out = Tracked()
    rows: dict[str, list] = {k: [] for k in evals}

    def record(step: int) -> None:
        out.step.append(step)
        for k, (Xe, ye) in evals.items():
            rows[k].append(evaluate_ensemble(ens, Xe, ye, cfg.loss, n_classes))

    def after(step: int) -> None:
        if step in snapshot_steps:
            out.snapshots[step] = {n: p.detach().clone() for n, p in ens.params.items()}
        if step % eval_every == 0:
            record(step)

    record(0)
    if 0 in snapshot_steps:
        out.snapshots[0] = {n: p.detach().clone() for n, p in ens.params.items()}
    quiet = dataclasses.replace(cfg, eval_every=10**12)     # the engine's own evaluations: start and end only
    with enforce_masks(ens.params, masks, held), after_each_step(ens.params, after):
        out.history = fit_ensemble(ens, X, y, quiet, None, None, n_classes, data_seeds, progress, desc)
    if out.history.diverged.any():
        raise Diverged(f"{desc}: {int(out.history.diverged.sum())} replica(s) diverged "
                       f"(first at step {int(out.history.diverged_at.max())}); lower the learning rate")
    for k in evals:
        out.loss[k] = np.stack([r[0] for r in rows[k]])
        out.error[k] = np.stack([r[1] for r in rows[k]])
    return out


# ------------------------------------------------------------------------------------ rewinding, controls

def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the state dict (parameters and buffers), to rewind to later."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None):
    """Load ``state`` back bit for bit, then zero the pruned entries."""
    for k, v in model.state_dict().items():
        v.copy_(state[k])
    if masks is not None:
        apply_masks(model, masks)
    return model


def reinitialize(build: Callable[[], nn.Module], seed: int, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """The random re-initialization control: the ticket's mask on a fresh draw ``seeded(build, seed)``."""
    return apply_masks(seeded(build, seed), masks)


# ------------------------------------------------------------------------- iterative magnitude pruning

@dataclass
class IMPRound:
    level: int
    remaining: float                    # fraction of the prunable weights kept in this round
    masks: Masks
    history: History


@dataclass
class IMPResult:
    rounds: list[IMPRound] = field(default_factory=list)
    rewind_state: dict[str, torch.Tensor] | None = None   # the weights every round restarts from
    final_model: nn.Module | None = None


def iterative_magnitude_pruning(build: Callable[[], nn.Module], seed: int, X: torch.Tensor, y: torch.Tensor,
                                cfg: TrainConfig, rounds: int, fraction: float = 0.2, scope: str = "global",
                                layer_fractions: Mapping[str, float] | None = None, rewind_step: int = 0,
                                X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                                n_classes: int | None = None, include_bias: bool = False,
                                progress: Progress = SILENT) -> IMPResult:
    """IMP (Frankle & Carbin 2019): train, prune ``fraction`` of the remaining weights, rewind, repeat.

    Round 0 trains the dense network from ``seeded(build, seed)``; the state after ``rewind_step`` optimizer
    steps of that run is saved (0 = the initialization, > 0 = late rewinding, Frankle et al. 2020), and every
    later round restarts from it with the new mask and trains for the full ``cfg`` budget.
    """
    model = seeded(build, seed).to(getattr(torch, cfg.dtype))
    masks = dense_masks(model, prunable_names(model, include_bias))
    result = IMPResult(rewind_state=snapshot(model) if rewind_step == 0 else None)

    def keep(step: int) -> None:
        if step == rewind_step:
            result.rewind_state = snapshot(model)

    for level in range(rounds + 1):
        if level > 0:
            masks = magnitude_prune(model, masks, fraction, scope, layer_fractions)
            rewind(model, result.rewind_state, masks)
        with after_each_step(model, keep) if level == 0 and rewind_step > 0 else nullcontext():
            hist = train_masked(model, masks, X, y, cfg, X_test, y_test, n_classes, progress,
                                desc=f"IMP round {level}/{rounds}")
        if result.rewind_state is None:
            raise ValueError(f"rewind_step: {rewind_step} is beyond the {hist.step[-1]} steps of training")
        result.rounds.append(IMPRound(level, fraction_remaining(masks), {n: m.clone() for n, m in masks.items()},
                                      hist))
    result.final_model = model
    return result


__all__ = ["Masks", "SCOPES", "prunable_names", "dense_masks", "count_kept", "fraction_remaining", "apply_masks",
           "magnitude_prune", "random_prune", "random_masks_like", "stack_masks", "unstack_masks",
           "after_each_step", "enforce_masks", "train_masked", "Tracked", "fit_masked_ensemble", "snapshot", "rewind",
           "reinitialize",
           "IMPRound", "IMPResult", "iterative_magnitude_pruning"]
