"""Train MLPs of different widths together: zero-padded into one stack, with gradient masks.

A width-h MLP is embedded in a width-H (H >= h) MLP of the same depth: its weights fill the top-left
blocks, everything else is zero and masked (its gradient is multiplied by 0). The extra units then
receive zero input and zero bias, output ReLU(0) = 0 through zero weights, so the padded network
computes exactly the narrow one, and SGD, momentum, Adam and weight decay all leave the zeros at zero.
Widths are grouped so that the padding waste stays below the per-step overhead it saves (a small
dynamic programme over a cost model); each group trains as one vmap ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from overparam.models import MLP, seeded
from overparam.train.ensemble import Ensemble, EnsembleHistory, fit_ensemble
from overparam.train.loop import TrainConfig
from overparam.train.parallel import run_jobs
from overparam.train.progress import SILENT, Progress

# Per-step overhead of one ensemble step in multiply-adds (about 0.4 ms of Python and dispatch at
# ~20 GFLOP/s): a group is worth merging while its padding costs less than this.
STEP_OVERHEAD_MACS = 1_300_000


def pad_mlp(model: MLP, width: int) -> tuple[MLP, dict[str, torch.Tensor]]:
    """``model`` embedded in an MLP of hidden width ``width``, and the masks of its trainable entries."""
    depth = len(model.widths)
    padded = MLP(model.in_dim, [width] * depth, model.out_dim, activation=model.activation,
                 bias=model.bias).to(next(model.parameters()).dtype)
    narrow, masks = dict(model.named_parameters()), {}
    with torch.no_grad():
        for name, p in padded.named_parameters():
            src = narrow[name]
            p.zero_()
            p[tuple(slice(0, n) for n in src.shape)] = src
            mask = torch.zeros_like(p)
            mask[tuple(slice(0, n) for n in src.shape)] = 1
            masks[name] = mask
    return padded, masks


def unpad_mlp(padded_state: dict[str, torch.Tensor], like: MLP) -> MLP:
    """The narrow MLP (shaped like ``like``) held in the top-left blocks of a padded state.

    Built on the meta device and filled by assignment: no random initialization is drawn, so worker
    threads never touch torch's global generator.
    """
    with torch.device("meta"):
        model = MLP(like.in_dim, like.widths, like.out_dim, activation=like.activation, bias=like.bias)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict({k: v[tuple(slice(0, n) for n in shapes[k])].clone() for k, v in padded_state.items()},
                          assign=True)
    return model


def step_macs(in_dim: int, width: int, out_dim: int, depth: int) -> int:
    """Multiply-adds per example of one forward pass."""
    return in_dim * width + (depth - 1) * width * width + width * out_dim


def group_cost(n_widths: int, widest: int, replicas: int, batch: int, in_dim: int, out_dim: int, depth: int,
               overhead: float = STEP_OVERHEAD_MACS) -> float:
    """Multiply-adds of one step of a group: its fixed overhead plus its networks padded to the widest."""
    return overhead + n_widths * replicas * batch * step_macs(in_dim, widest, out_dim, depth)


def group_widths(widths: list[int], replicas: int, in_dim: int, out_dim: int, depth: int,
                 overhead: float = STEP_OVERHEAD_MACS, batch: int = 100) -> list[list[int]]:
    """Split sorted widths into contiguous groups minimizing sum(overhead + padded compute of a batch)."""
    ws = sorted(set(widths))
    n = len(ws)
    best = [0.0] + [np.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + group_cost(j - i, ws[j - 1], replicas, batch, in_dim, out_dim, depth, overhead)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(ws[cut[j]:j])
        j = cut[j]
    return groups[::-1]


@dataclass
class WidthRun:
    width: int
    history: EnsembleHistory          # curves of this width's replicas only
    models: list[MLP]                 # the trained narrow networks, one per seed


def _select(hist: EnsembleHistory, idx: list[int]) -> EnsembleHistory:
    pick = lambda rows: [r[idx] for r in rows]  # noqa: E731
    return EnsembleHistory(step=list(hist.step), train_loss=pick(hist.train_loss), train_error=pick(hist.train_error),
                           test_loss=pick(hist.test_loss), test_error=pick(hist.test_error),
                           diverged=hist.diverged[idx], diverged_at=hist.diverged_at[idx], seconds=hist.seconds)


def train_mlp_widths(in_dim: int, widths: list[int], out_dim: int, seeds: dict[int, list[int]],
                     X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, X_test: torch.Tensor | None = None,
                     y_test: torch.Tensor | None = None, n_classes: int | None = None, depth: int = 2,
                     activation: str = "relu", groups: list[list[int]] | None = None,
                     progress: Progress = SILENT, workers: int = 1,
                     processes: bool | None = None) -> dict[int, WidthRun]:
    """Train MLP(in, [h]*depth, out) for every width h and every seed in ``seeds[h]``, groups at a time.

    Each network starts from ``seeded(lambda: MLP(...h...), seed)`` and follows the trajectory it
    would follow alone under :func:`overparam.train.train` with ``cfg`` (shared data order).
    ``workers > 1`` trains that many groups side by side, largest first (:mod:`overparam.train.parallel`),
    in threads or, when ``processes`` is True (None: when the estimated work is long), in worker processes.
    """
    dtype = getattr(torch, cfg.dtype)
    replicas = max(len(seeds[h]) for h in widths)
    batch, _, total = cfg.plan(len(X))
    # with several workers a group's fixed overhead is shared, so finer groups balance the cores better
    groups = groups or group_widths(widths, replicas, in_dim, out_dim, depth, batch=batch,
                                    overhead=STEP_OVERHEAD_MACS / max(1, workers))

    def prepare(group: list[int]):
        """The padded replicas of one group. Built here, in order, never inside a worker thread:
        ``seeded`` draws from torch's global generator, which threads would share."""
        H = max(group)
        members, models, masks = [], [], []
        for h in group:
            for s in seeds[h]:
                narrow = seeded(lambda: MLP(in_dim, [h] * depth, out_dim, activation=activation), s).to(dtype)
                padded, mask = pad_mlp(narrow, H)
                members.append((h, narrow))
                models.append(padded)
                masks.append(mask)
        # With ReLU the padding needs no masks: a padded unit's pre-activation is 0 and ReLU'(0) = 0 in
        # PyTorch, so every gradient into or out of it is exactly 0 (and so are Adam's and weight decay's
        # updates of zeros). Other activations (tanh'(0) = 1) need the masks.
        pads = any(h < H for h in group)
        stacked_masks = ({k: torch.stack([m[k] for m in masks]) for k in masks[0]}
                         if pads and activation != "relu" else None)
        return members, models, stacked_masks

    costs = [group_cost(len(group), max(group), replicas, batch, in_dim, out_dim, depth) for group in groups]
    if processes is None:  # worth a process pool's start-up when the work is long
        processes = workers > 1 and estimated_seconds(costs, total) > PROCESS_THRESHOLD_SECONDS
    jobs = [partial(_fit_group, group, *prepare(group), X, y, cfg, X_test, y_test, n_classes,
                    SILENT if processes else progress, f"widths {group[0]}..{group[-1]} ({g + 1}/{len(groups)})")
            for g, group in enumerate(groups)]
    out: dict[int, WidthRun] = {}
    with progress.bar(len(groups), f"{len(groups)} width groups on {min(workers, len(groups))} "
                                   f"{'processes' if processes else 'workers'}") as bar:
        for part in run_jobs(jobs, workers, costs, processes=processes, on_done=lambda i: bar.update(1)):
            out.update(part)
    return out


# Work (in seconds at ~1e10 multiply-adds/s, forward and backward) above which train_mlp_widths runs its
# groups in worker processes instead of threads: threads share the GIL, which small networks' steps hold
# most of the time; a process pool costs a couple of seconds to start.
PROCESS_THRESHOLD_SECONDS = 20.0


def estimated_seconds(costs: list[float], steps: int) -> float:
    """Seconds for ``steps`` steps of groups costing ``costs`` multiply-adds per forward pass."""
    return 3 * sum(costs) * steps / 1e10


def _fit_group(group, members, models, masks, X, y, cfg, X_test, y_test, n_classes, progress, desc):
    """Train one padded group (a module-level function, so a worker process can run it)."""
    dtype = getattr(torch, cfg.dtype)
    ens = Ensemble(models, dtype, masks)
    hist = fit_ensemble(ens, X, y, cfg, X_test, y_test, n_classes, progress=progress, desc=desc)
    states = {k: v.detach() for k, v in {**ens.params, **ens.buffers}.items()}
    out: dict[int, WidthRun] = {}
    for h in group:
        idx = [i for i, (w, _) in enumerate(members) if w == h]
        trained = [unpad_mlp({k: v[i] for k, v in states.items()}, members[i][1]) for i in idx]
        out[h] = WidthRun(h, _select(hist, idx), trained)
    return out
