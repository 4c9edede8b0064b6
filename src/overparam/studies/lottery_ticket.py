"""Lottery tickets: iterative magnitude pruning with rewinding, against random pruning and re-initialization.

Frankle & Carbin 2019 (ICLR, "The lottery ticket hypothesis", Sec. 2, Fig. 3-4): train a LeNet-300-100, prune
20% of the remaining weights per round by magnitude (output layer 10%), reset the survivors to their initial
values and repeat. Down to 10-20% of the weights such "winning tickets" reach the dense network's test accuracy
or better, and reach their early-stopping iteration (minimum validation loss) sooner; the same masks on a fresh
initialization ("random reinit") fall behind. Frankle et al. 2020 (ICML, "Linear mode connectivity and the
lottery ticket hypothesis"): rewinding to step k instead of 0, and *instability* -- the error barrier on the
straight line between two copies trained from the rewound weights with different data orders; IMP subnetworks
match the dense accuracy only when they are stable (LeNet is stable already at initialization).

Here: an in-300-100-10 MLP (input size from the data), all variants of one level trained as one vmap ensemble:
IMP rewound to initialization, IMP rewound to step k (late rewinding), and at some levels the two controls --
random pruning (IMP's per-layer counts at random positions, original initialization) and random
re-initialization (IMP's mask on a fresh initialization). Masks, rewinding and the controls come from
:mod:`overparam.interventions.prune`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import load_dataset
from overparam.interventions.prune import (dense_masks, fit_masked_ensemble, fraction_remaining, magnitude_prune,
                                           random_masks_like, stack_masks)
from overparam.measure import interpolate
from overparam.models import MLP, seeded
from overparam.studies.base import (Check, DATASET_SHAPES, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH, RunContext, Study,
                                    StudyResult, check_data_keys, data_bytes, fmt, mlp_training_bytes, register)
from overparam.train import Ensemble, TrainConfig, loss_function

FC2019 = "Frankle & Carbin 2019 (ICLR), Sec. 2, Fig. 3-4 (LeNet-300-100 on MNIST)"
FRANKLE2020 = "Frankle et al. 2020 (ICML, linear mode connectivity), Sec. 3-5"
VARIANTS = ("imp", "imp_late", "random_prune", "reinit")
LABELS = {"imp": "IMP, rewind to init", "imp_late": "IMP, rewind to step k", "random_prune": "random pruning",
          "reinit": "random re-init"}


@dataclass
class TicketTrainingConfig(StudyConfig):
    """Data and training keys shared by lottery-ticket and ticket-perturbation."""

    dataset: str = param("mnist1d", "data: mnist1d, digits, or mnist (IDX files in --data-dir)",
                         choices=("mnist1d", "digits", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    n_train: int = param(3500, "training examples (the validation set is taken on top of them)", min=50,
                         max=MAX_EXAMPLES)
    n_val: int = param(500, "validation examples, carved from the training split (early stopping)", min=20,
                       max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    widths: list[int] = param([300, 100], "hidden widths (LeNet-300-100)", min=1, max=MAX_WIDTH)
    optimizer: str = param("sgd", "sgd (with momentum) or adam", choices=("sgd", "adam"))
    lr: float = param(0.05, "learning rate", min=1e-6, max=10.0)
    momentum: float = param(0.9, "SGD momentum", min=0.0, max=0.999)
    batch_size: int = param(128, "minibatch size", min=1, max=MAX_EXAMPLES)
    steps: int = param(500, "optimizer steps of every training run (the same budget every round)", min=10,
                       max=MAX_STEPS)
    eval_every: int = param(25, "steps between validation/test evaluations (early-stopping resolution)", min=1,
                            max=MAX_STEPS)

    def validate(self) -> None:
        check_data_keys(self.dataset, self.data_dir, self.n_train + self.n_val, "n_train (+ n_val)", self.n_test)

    def peak_bytes(self) -> dict[str, float]:
        d, k, _, _ = DATASET_SHAPES[self.dataset]
        replicas = getattr(self, "seeds", 1) * 4   # the seeds, their rewinding points, masks and controls
        return {**data_bytes(self.dataset, self.n_train + self.n_val, self.n_test),
                "widths": mlp_training_bytes(replicas, d, self.widths, k, self.batch_size)}


@dataclass
class LotteryTicketConfig(TicketTrainingConfig):
    rounds: int = param(8, "pruning rounds after the dense run", min=1, max=40)
    fraction: float = param(0.2, "fraction of the remaining hidden-layer weights pruned per round", min=0.01, max=0.9)
    output_fraction: float = param(0.1, "fraction of the remaining output-layer weights pruned per round",
                                   min=0.0, max=0.9)
    scope: str = param("global", "rank hidden-layer weights together (global) or per layer (layerwise)",
                       choices=("global", "layerwise"))
    rewind_step: int = param(50, "late rewinding: the step k that IMP-late restarts from", min=1, max=MAX_STEPS)
    control_levels: list[int] = param([4, 8], "levels at which random pruning and random re-init are trained",
                                      min=1, max=40)
    seeds: int = param(2, "independent initializations (and data orders)", min=1, max=32)
    target_low: float = param(0.1, "the checks look at levels whose weight fraction is in [low, high]",
                              min=0.001, max=1.0)
    target_high: float = param(0.25, "upper end of the checked weight fractions", min=0.001, max=1.0)
    match_tol: float = param(0.01, "a ticket 'matches' dense if its test accuracy is at most this below", min=0.0,
                             max=0.5)
    control_margin: float = param(0.01, "controls 'fall behind' if the ticket beats them by at least this", min=0.0,
                                  max=0.5)
    stable_tol: float = param(0.02, "error barrier below which a ticket counts as stable", min=0.0, max=1.0)

    def validate(self) -> None:
        super().validate()
        if any(level > self.rounds for level in self.control_levels):
            raise ConfigError(f"control_levels: each level must be <= rounds ({self.rounds})")
        if self.rewind_step >= self.steps:
            raise ConfigError("rewind_step: must be smaller than steps")
        if self.target_low >= self.target_high:
            raise ConfigError("target_low: must be smaller than target_high")


PRESETS = {
    # MNIST-1D (40 inputs): 40-300-100-10, 8 rounds to ~17% of the weights, 2 seeds, 600 SGD steps per round.
    "quick": {},
    # open_lth's LeNet on MNIST: SGD lr 0.1, batch 60 (F&C) / 128 (open_lth), 50k iterations, 5000 validation
    # images, 20 rounds (to ~1.5%), controls every other level, 5 seeds.
    "paper": {"dataset": "mnist", "n_train": 55000, "n_val": 5000, "n_test": 10000, "batch_size": 60,
              "steps": 50000, "eval_every": 100, "rounds": 20, "rewind_step": 500,
              "control_levels": [2, 4, 6, 8, 10, 12, 14, 16, 18, 20], "seeds": 5},
}


def load_split(cfg):
    """Training, validation (carved from the training split) and test tensors."""
    data = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train + cfg.n_val, n_test=cfg.n_test,
                        data_dir=cfg.data_dir or None)
    gen = torch.Generator().manual_seed(cfg.seed + 17)
    perm = torch.randperm(len(data.X_train), generator=gen)
    tr, va = perm[:cfg.n_train], perm[cfg.n_train:cfg.n_train + cfg.n_val]
    return (data.X_train[tr], data.y_train[tr], data.X_train[va], data.y_train[va], data.X_test, data.y_test,
            data.input_dim, data.n_classes)


def early_stop(steps, val_loss: np.ndarray, test_error: np.ndarray):
    """Per replica: the step of minimum validation loss (after step 0) and the test accuracy there."""
    idx = 1 + np.argmin(val_loss[1:], axis=0)
    cols = np.arange(val_loss.shape[1])
    return np.asarray(steps)[idx], 1.0 - test_error[idx, cols]


def ticket_setup(cfg: TicketTrainingConfig):
    """What both ticket studies start from: data splits, the network builder, the training config, the
    evaluation sets, one initialization per seed and the names of the prunable weights."""
    torch.set_num_threads(1)
    X, y, Xv, yv, Xt, yt, n_in, n_out = load_split(cfg)
    build = lambda: MLP(n_in, cfg.widths, n_out)  # noqa: E731
    tcfg = TrainConfig(optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0,
                       batch_size=cfg.batch_size, steps=cfg.steps, seed=cfg.seed)
    evals = {"val": (Xv, yv), "test": (Xt, yt)}
    inits = [seeded(build, cfg.seed * 1000 + s) for s in range(cfg.seeds)]
    return X, y, n_in, n_out, build, tcfg, evals, inits, list(dense_masks(inits[0]))


def run(cfg: LotteryTicketConfig, ctx: RunContext) -> StudyResult:
    X, y, n_in, n_out, build, tcfg, evals, inits, names = ticket_setup(cfg)
    S, L = cfg.seeds, cfg.rounds
    out_name = names[-1]
    layer_fractions = {out_name: cfg.output_fraction}
    data_seed = [cfg.seed * 7919 + s for s in range(S)]

    # per level and seed: accuracy at early stop, early-stop step, final accuracy; NaN where not trained
    acc = {v: np.full((L + 1, S), np.nan) for v in VARIANTS}
    stop = {v: np.full((L + 1, S), np.nan) for v in VARIANTS}
    final = {v: np.full((L + 1, S), np.nan) for v in VARIANTS}
    remaining = np.zeros(L + 1)
    masks = {"imp": [dense_masks(m) for m in inits], "imp_late": [dense_masks(m) for m in inits]}
    late_state: list[dict] = [None] * S
    instability: dict[str, float] = {}
    curves = {}
    check_level = _check_level(cfg)
    for level in range(L + 1):
        remaining[level] = fraction_remaining(masks["imp"][0])
        jobs = []   # (variant, seed, model, masks, data seed)
        for s in range(S):
            jobs.append(("imp", s, inits[s], masks["imp"][s], data_seed[s]))
            if level > 0:
                jobs.append(("imp_late", s, _from_state(build, late_state[s]), masks["imp_late"][s], data_seed[s]))
            if level in cfg.control_levels:
                gen = torch.Generator().manual_seed(cfg.seed * 31337 + 101 * level + s)
                jobs.append(("random_prune", s, inits[s], random_masks_like(masks["imp"][s], gen), data_seed[s]))
                jobs.append(("reinit", s, seeded(build, 10**6 + cfg.seed * 1000 + 97 * level + s), masks["imp"][s],
                             data_seed[s]))
        pairs = {}
        if level in (0, check_level):   # instability: a copy of seed 0's run with another data order
            for v in (("imp",) if level == 0 else ("imp", "imp_late")):
                j = next(i for i, job in enumerate(jobs) if job[0] == v and job[1] == 0)
                jobs.append((v + "_copy", 0, jobs[j][2], jobs[j][3], 10**7 + cfg.seed))
                pairs[v] = (j, len(jobs) - 1)
        ens = Ensemble([_copy(job[2]) for job in jobs])
        tracked = fit_masked_ensemble(ens, stack_masks([job[3] for job in jobs]), X, y, tcfg, evals, n_out,
                                      cfg.eval_every, data_seeds=[job[4] for job in jobs],
                                      snapshot_steps=(cfg.rewind_step,) if level == 0 else (),
                                      progress=ctx.progress,
                                      desc=f"level {level}/{L} ({100 * remaining[level]:.1f}% of weights) x{len(jobs)}")
        steps_at, acc_at = early_stop(tracked.step, tracked.loss["val"], tracked.error["test"])
        for r, (v, s, *_rest) in enumerate(jobs):
            if v.endswith("_copy"):
                continue
            acc[v][level, s], stop[v][level, s] = acc_at[r], steps_at[r]
            final[v][level, s] = 1.0 - tracked.error["test"][-1, r]
        if level == 0:   # dense: IMP-late is the same run; its rewind point is the step-k snapshot
            for v in ("imp_late",):
                acc[v][0], stop[v][0], final[v][0] = acc["imp"][0], stop["imp"][0], final["imp"][0]
            snap = tracked.snapshots[cfg.rewind_step]
            late_state = [{n: p[r].clone() for n, p in snap.items()} for r in range(S)]
            curves["dense"] = tracked.error["test"][:, 0]
        if level == check_level:
            curves["ticket"] = tracked.error["test"][:, 0]
        for v, (a, b) in pairs.items():
            key = "dense" if level == 0 else v
            res = interpolate(ens.replica(a), ens.replica(b), loss_function("cross_entropy", n_out), evals["test"],
                              steps=11, extend=0.0)
            instability[key] = res.error_barrier
            instability[key + "_distance"] = res.distance
            instability[key + "_loss_barrier"] = res.loss_barrier
        if level < L:   # prune each IMP run from its own trained weights
            for v in ("imp", "imp_late"):
                for s in range(S):
                    r = next(i for i, job in enumerate(jobs) if job[0] == (v if level > 0 else "imp") and job[1] == s)
                    trained = {n: ens.params[n][r].detach() for n in names}
                    masks[v][s] = magnitude_prune(trained, masks[v][s], cfg.fraction, cfg.scope, layer_fractions)
        curves["steps"] = np.asarray(tracked.step)
    return summarize(cfg, remaining, acc, stop, final, instability, curves)


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def _from_state(build, state):
    model = seeded(build, 0)   # any draw: overwritten, and the global RNG stays untouched
    model.load_state_dict(state)
    return model


def _check_level(cfg) -> int:
    """The deepest level whose hidden-layer fraction (1 - fraction)^level is still >= target_low."""
    levels = [l for l in range(cfg.rounds + 1) if (1 - cfg.fraction) ** l >= cfg.target_low]
    return levels[-1]


def summarize(cfg, remaining, acc, stop, final, instability, curves) -> StudyResult:
    """remaining: (L+1,) weight fraction per level; acc/stop/final: variant -> (L+1, seeds)."""
    m = {v: _mean(a) for v, a in acc.items()}
    st = {v: _mean(a) for v, a in stop.items()}
    dense, dense_stop = m["imp"][0], st["imp"][0]
    in_range = [l for l in range(len(remaining)) if cfg.target_low <= remaining[l] <= cfg.target_high]
    ctrl = [l for l in in_range if np.isfinite(m["reinit"][l]) and np.isfinite(m["random_prune"][l])]
    best = max(in_range, key=lambda l: m["imp"][l]) if in_range else None
    late_best = max(in_range, key=lambda l: m["imp_late"][l]) if in_range else None
    cl = ctrl[-1] if ctrl else None    # the sparsest level in range with controls
    checks = []
    checks.append(Check(
        "winning tickets match the dense network",
        f"at some level with {100 * cfg.target_low:g}-{100 * cfg.target_high:g}% of the weights, IMP (rewind to "
        f"init) test accuracy >= dense - {100 * cfg.match_tol:g} points",
        (f"{100 * m['imp'][best]:.1f}% at {100 * remaining[best]:.1f}% of weights vs dense {100 * dense:.1f}%"
         if best is not None else "no level in range"),
        best is not None and m["imp"][best] >= dense - cfg.match_tol, FC2019))
    checks.append(Check(
        "late rewinding matches the dense network too",
        f"IMP rewound to step {cfg.rewind_step}: test accuracy >= dense - {100 * cfg.match_tol:g} points at some "
        "level in range",
        (f"{100 * m['imp_late'][late_best]:.1f}% at {100 * remaining[late_best]:.1f}% of weights"
         if late_best is not None else "no level in range"),
        late_best is not None and m["imp_late"][late_best] >= dense - cfg.match_tol, FRANKLE2020))
    if cl is not None:
        gap_re, gap_rp = m["imp"][cl] - m["reinit"][cl], m["imp"][cl] - m["random_prune"][cl]
    else:
        gap_re = gap_rp = float("nan")
    checks.append(Check(
        "random re-initialization falls behind",
        f"at the sparsest checked level with controls, ticket accuracy - re-init accuracy >= "
        f"{100 * cfg.control_margin:g} points",
        (f"{100 * gap_re:+.1f} points at {100 * remaining[cl]:.1f}% of weights" if cl is not None
         else "no control level"),
        cl is not None and gap_re >= cfg.control_margin, FC2019 + ", Fig. 4 (reinit)"))
    checks.append(Check(
        "random pruning falls behind",
        f"same level: ticket accuracy - random-pruning accuracy >= {100 * cfg.control_margin:g} points",
        (f"{100 * gap_rp:+.1f} points at {100 * remaining[cl]:.1f}% of weights" if cl is not None
         else "no control level"),
        cl is not None and gap_rp >= cfg.control_margin, FRANKLE2020 + " (random pruning does not match)"))
    checks.append(Check(
        "winning tickets stop earlier",
        "early-stopping step (minimum validation loss) of the ticket at the best level in range < dense's",
        (f"step {fmt(st['imp'][best], 4)} at {100 * remaining[best]:.1f}% vs dense step {fmt(dense_stop, 4)}"
         if best is not None else "no level in range"),
        best is not None and st["imp"][best] < dense_stop, FC2019 + ", Fig. 3 (early-stop iteration)"))
    tb = instability.get("imp", float("nan"))   # the error barrier
    checks.append(Check(
        "the ticket is stable to data order",
        f"error barrier between two copies of the ticket (rewound to init) trained with different data orders "
        f"<= {100 * cfg.stable_tol:g} points",
        f"{100 * tb:.2f} points (dense from init: {100 * instability.get('dense', float('nan')):.2f}, "
        f"ticket from step k: {100 * instability.get('imp_late', float('nan')):.2f})",
        bool(np.isfinite(tb) and tb <= cfg.stable_tol), FRANKLE2020 + " (LeNet: stable at init, IMP works)"))
    metrics = {"remaining": remaining.tolist(), "dense_accuracy": float(dense), "dense_early_stop": float(dense_stop),
               "accuracy": {v: _list(m[v]) for v in VARIANTS},
               "early_stop_step": {v: _list(st[v]) for v in VARIANTS},
               "final_accuracy": {v: _list(_mean(final[v])) for v in VARIANTS},
               "instability_error_barrier": {k: float(v) for k, v in instability.items()
                                            if not k.endswith(("_distance", "_loss_barrier"))},
               "instability_loss_barrier": {k[:-13]: float(v) for k, v in instability.items()
                                            if k.endswith("_loss_barrier")},
               "instability_distance": {k[:-9]: float(v) for k, v in instability.items() if k.endswith("_distance")},
               "best_ticket_level": best, "control_level": cl}
    arrays = {"remaining": remaining, **{f"acc_{v}": acc[v] for v in VARIANTS},
              **{f"stop_{v}": stop[v] for v in VARIANTS}, **{f"final_{v}": final[v] for v in VARIANTS}}
    notes = (f"Dense {100 * dense:.1f}% (early stop at step {fmt(dense_stop, 4)})."
             + (f" Best ticket in range: {100 * m['imp'][best]:.1f}% at {100 * remaining[best]:.1f}% of the weights "
                f"(stop at step {fmt(st['imp'][best], 4)})." if best is not None else "")
             + (f" At {100 * remaining[cl]:.1f}%: re-init {100 * m['reinit'][cl]:.1f}%, random pruning "
                f"{100 * m['random_prune'][cl]:.1f}%." if cl is not None else "")
             + f" Ticket instability {100 * tb:.2f} points.")
    return StudyResult(metrics, checks, arrays, {"lottery_ticket": _figure(cfg, remaining, m, st, curves)},
                       notes=notes)


def _mean(a: np.ndarray) -> np.ndarray:
    """Mean over seeds per level; NaN at levels that were not trained."""
    ok = np.isfinite(a)
    return np.where(ok.any(1), np.where(ok, a, 0).sum(1) / np.maximum(ok.sum(1), 1), np.nan)


def _list(a):
    return [None if not np.isfinite(x) else float(x) for x in a]


def _figure(cfg, remaining, m, st, curves):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    pct = 100 * remaining
    for v, mk in zip(VARIANTS, ("o-", "s-", "v--", "^--")):
        ok = np.isfinite(m[v])
        axes[0].plot(pct[ok], 100 * m[v][ok], mk, label=LABELS[v])
        axes[1].plot(pct[ok], st[v][ok], mk, label=LABELS[v])
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.axvspan(100 * cfg.target_low, 100 * cfg.target_high, color="0.9", zorder=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy at early stop (%)")
    axes[1].set_ylabel("early-stopping step (min val loss)")
    axes[0].legend(fontsize=8)
    if "steps" in curves:
        for key, label in (("dense", "dense"), ("ticket", "ticket at checked level")):
            if key in curves:
                axes[2].plot(curves["steps"], 100 * (1 - curves[key]), label=label)
        axes[2].set_xlabel("step")
        axes[2].set_ylabel("test accuracy (%)")
        axes[2].legend(fontsize=8)
        axes[2].grid(alpha=0.3)
    fig.suptitle(f"Lottery tickets ({cfg.dataset}, MLP {'-'.join(map(str, cfg.widths))}, "
                 f"{100 * cfg.fraction:g}% per round, {cfg.scope})", fontsize=10)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="lottery-ticket",
    description="IMP with rewinding vs random pruning and re-init: accuracy and early stopping vs weights left.",
    paper="Frankle & Carbin 2019; Frankle et al. 2020",
    config=LotteryTicketConfig, presets=PRESETS, run=run))
