"""Train until a target: snapshot each replica of an ensemble the first time it reaches a training loss or error.

Studies that compare solutions "at the same training loss" (batch-size, generalization-measures) need each
replica's weights at the moment it first meets the criterion, not at a fixed step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from overparam.train.ensemble import Ensemble, fit_ensemble
from overparam.train.loop import Diverged, TrainConfig


@dataclass
class Fitted:
    models: list                 # one nn.Module per replica: the weights at the first chunk meeting the target
    steps: np.ndarray            # optimizer steps taken when the snapshot was taken
    value: np.ndarray            # the criterion's value at the snapshot
    reached: np.ndarray          # bool: the target was met within max_steps


def train_to_target(ens: Ensemble, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, n_classes: int,
                    target: float, max_steps: int, chunk_steps: int = 50, metric: str = "train_loss",
                    data_seeds: list[int] | None = None, unpack=None, progress=None, desc: str = "train",
                    min_steps: int = 0) -> Fitted:
    """Train an ensemble in chunks of whole epochs (>= ``chunk_steps`` steps) and snapshot each replica the
    first time its full-data ``metric`` ("train_loss" or "train_error") is <= ``target``.

    Each chunk is one :func:`fit_ensemble` call with a fresh optimizer and a new data order per chunk (seeded
    from ``cfg.seed`` / ``data_seeds`` and the chunk index), so this is exact for plain SGD (with or without
    weight decay); momentum or Adam state would restart at every chunk. ``unpack(ens, r)`` turns replica r
    into a module (default ``ens.replica``); ``progress(steps, values)`` is called after every chunk; no
    snapshot is taken before ``min_steps``. Divergence raises :class:`Diverged`.
    """
    if metric not in ("train_loss", "train_error"):
        raise ValueError(f"metric: {metric!r} is not allowed; choose train_loss or train_error")
    unpack = unpack or (lambda e, r: e.replica(r))
    n, R = len(X), ens.size
    batch, per_epoch, _ = cfg.plan(n)
    chunk = per_epoch * max(1, math.ceil(chunk_steps / per_epoch))
    models, steps_at = [None] * R, np.full(R, -1)
    value = np.full(R, np.nan)
    steps, k = 0, 0
    while steps < max(max_steps, min_steps) and any(m is None for m in models):
        st = min(chunk, max(max_steps, min_steps) - steps)
        c = dataclasses.replace(cfg, steps=st, eval_every=st, seed=cfg.seed * 7919 + k)
        ds = None if data_seeds is None else [s * 7919 + k for s in data_seeds]
        hist = fit_ensemble(ens, X, y, c, None, None, n_classes, ds)
        steps += st
        k += 1
        if hist.diverged.any():
            raise Diverged(f"{desc}: diverged after {steps} steps (lr={cfg.lr}, batch={batch}); lower the "
                           "learning rate")
        val = hist.final()[metric]
        for r in range(R):
            if models[r] is None and val[r] <= target and steps >= min_steps:
                models[r], steps_at[r], value[r] = unpack(ens, r), steps, val[r]
        if progress is not None:
            progress(steps, val)
    reached = np.array([m is not None for m in models])
    for r in range(R):
        if models[r] is None:
            models[r], steps_at[r], value[r] = unpack(ens, r), steps, val[r]
    return Fitted(models, steps_at, value, reached)
