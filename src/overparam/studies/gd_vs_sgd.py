"""GD vs SGD on a small and a large fully connected net: the talk's 2x2 table.

Sagun, Guney, Ben Arous, LeCun 2014 ("Explorations on high dimensional landscapes", arXiv 1412.6615),
as shown in the talk: fully connected nets on MNIST with about M = 43K and M = 450K parameters, trained
with full-batch gradient descent (GD) and with minibatch SGD, repeated over initializations; the average
number of misclassified test images (of 10,000) was small-SGD 256, small-GD 299, large-SGD 174,
large-GD 194: the large net beats the small one and SGD beats GD, for both.

Here: in-h-out ReLU MLPs (``depth`` hidden layers of width h). Parameter counts are scaled to the input
dimension d of the dataset by keeping the talk's parameters per input: the target count is
M_784 * d / 784, and h is the integer width whose exact count is closest to it (on MNIST, d = 784,
this gives h = 54 -> 42,940 and h = 566 -> 449,980 parameters at depth 1). Stopping rule: every run makes
the same number of parameter updates with the same learning rate and schedule (Sagun et al. compare GD and
SGD over the same number of steps); GD uses the whole training set per update, SGD a minibatch. Each
(size, optimizer) cell is one vmap ensemble over seeds; a seed gives the same initialization to GD and to
SGD (paired comparison) and SGD replicas each draw their own data order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import load_dataset
from overparam.models import MLP, mlp_parameter_count
from overparam.studies.base import (Check, DATASET_SHAPES, MAX_EXAMPLES, MAX_STEPS, RunContext, Study, StudyResult,
                                    check_data_keys, data_bytes, mlp_training_bytes, register)
from overparam.train import Diverged, TrainConfig, train_ensemble

SAGUN = "Sagun, Guney, Ben Arous, LeCun 2014 (arXiv 1412.6615), as reported in the talk"
# Average misclassifications of the 10,000 MNIST test images (the talk's table).
TALK = {("small", "sgd"): 256, ("small", "gd"): 299, ("large", "sgd"): 174, ("large", "gd"): 194}
TALK_TEST_SIZE = 10_000
MNIST_INPUTS = 784
CELLS = (("small", "sgd"), ("small", "gd"), ("large", "sgd"), ("large", "gd"))


@dataclass
class GdVsSgdConfig(StudyConfig):
    dataset: str = param("digits", "training data", choices=("digits", "mnist1d", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    n_train: int | None = param(None, "training examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    small_params: int = param(43_000, "parameters of the small net on 784-input MNIST (scaled to the input)",
                              min=100, max=10**9)
    large_params: int = param(450_000, "parameters of the large net on 784-input MNIST (scaled to the input)",
                              min=100, max=10**9)
    depth: int = param(1, "hidden layers of both nets", min=1, max=6)
    lr: float = param(0.5, "learning rate of both GD and SGD", min=1e-6, max=10.0)
    schedule: str = param("cosine", "learning-rate schedule of both", choices=("constant", "cosine"))
    batch_size: int = param(10, "SGD minibatch size (GD uses the full training set)", min=1, max=MAX_EXAMPLES)
    steps: int = param(500, "parameter updates of every run (the common stopping rule)", min=10, max=MAX_STEPS)
    evals: int = param(10, "evaluations along training (curves)", min=1, max=1000)
    seeds: int = param(6, "initializations per cell, trained as one vmap ensemble", min=1, max=64)

    def validate(self) -> None:
        if self.large_params <= self.small_params:
            raise ConfigError("large_params: must exceed small_params")
        check_data_keys(self.dataset, self.data_dir, self.n_train, n_test=self.n_test)

    def peak_bytes(self) -> dict[str, float]:
        d, k, default_train, _ = DATASET_SHAPES[self.dataset]
        n = self.n_train or default_train
        width = scaled_width(self.large_params, d, k, self.depth)
        return {**data_bytes(self.dataset, self.n_train, self.n_test),   # GD: the whole training set per step
                "large_params": mlp_training_bytes(self.seeds, d, [width] * self.depth, k, n)}


PRESETS = {
    # all 1257 digits (64 inputs): h = 47 (3,535 params) and h = 490 (36,760); 500 updates, lr 0.5, batch 10.
    "quick": {"dataset": "digits", "steps": 500, "seeds": 6},
    # MNIST-1D's 4000 training examples (h = 43 and 450), long training, more seeds; for the talk's own data
    # use --set dataset=mnist --data-dir DIR (the IDX files), which gives h = 54 and 566.
    "paper": {"dataset": "mnist1d", "lr": 0.2, "batch_size": 32, "steps": 20_000, "evals": 40, "seeds": 10},
}


def scaled_width(params_at_784: int, input_dim: int, n_classes: int, depth: int) -> int:
    """Width h whose in-h-...-h-out MLP count is closest to params_at_784 * input_dim / 784."""
    target = params_at_784 * input_dim / MNIST_INPUTS
    lo, hi = 1, 1
    while mlp_parameter_count(input_dim, [hi] * depth, n_classes) < target:
        hi *= 2
    while hi - lo > 1:   # counts grow with h: bisect for the last width below the target
        mid = (lo + hi) // 2
        if mlp_parameter_count(input_dim, [mid] * depth, n_classes) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda h: (abs(mlp_parameter_count(input_dim, [h] * depth, n_classes) - target), h))


def run(cfg: GdVsSgdConfig, ctx: RunContext) -> StudyResult:
    torch.set_num_threads(1)
    data = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                        data_dir=(cfg.data_dir or ctx.data_dir) if cfg.dataset == "mnist" else None)
    n_in, n_out = data.input_dim, data.n_classes
    widths = {"small": scaled_width(cfg.small_params, n_in, n_out, cfg.depth),
              "large": scaled_width(cfg.large_params, n_in, n_out, cfg.depth)}
    seeds = [cfg.seed * 1_000_003 + 101 * r + 3 for r in range(cfg.seeds)]
    data_seeds = [cfg.seed * 7919 + 17 * r + 1 for r in range(cfg.seeds)]
    cells, steps = {}, None
    for i, (size, opt) in enumerate(CELLS):
        hidden = [widths[size]] * cfg.depth
        tcfg = TrainConfig(optimizer=opt, lr=cfg.lr, batch_size=cfg.batch_size, steps=cfg.steps,
                           schedule=cfg.schedule, eval_every=max(1, cfg.steps // cfg.evals), seed=cfg.seed)
        _, hist = train_ensemble(lambda: MLP(n_in, hidden, n_out), seeds, data.X_train, data.y_train, tcfg,
                                 data.X_test, data.y_test, n_out, data_seeds=data_seeds if opt == "sgd" else None,
                                 progress=ctx.progress,
                                 desc=f"{size} h={widths[size]} {opt.upper()} ({i + 1}/4) x{cfg.seeds}")
        if hist.diverged.any():
            raise Diverged(f"{size} net with {opt.upper()} diverged at step {int(hist.diverged_at.max())} "
                           f"(lr={cfg.lr}); lower the learning rate")
        steps = np.asarray(hist.step, dtype=float)
        cells[(size, opt)] = {"test_error": hist.curves("test_error"), "train_loss": hist.curves("train_loss"),
                              "train_error": hist.curves("train_error")}
    params = {size: mlp_parameter_count(n_in, [h] * cfg.depth, n_out) for size, h in widths.items()}
    return _summarize(cfg, steps, cells, widths, params, data.n_train, data.n_test, n_in)


def cell_order(errors: dict) -> list[tuple[str, str]]:
    """The four cells sorted from best (lowest error) to worst."""
    return sorted(CELLS, key=lambda c: errors[c])


def _name(cell) -> str:
    return f"{cell[0]}-{cell[1].upper()}"


def _summarize(cfg, steps, cells, widths, params, n_train, n_test, n_in) -> StudyResult:
    """cells: (size, optimizer) -> {"test_error", "train_loss", "train_error"}: arrays (evaluations, seeds)."""
    err = {c: float(np.mean(cells[c]["test_error"][-1])) for c in CELLS}
    sem = {c: float(np.std(cells[c]["test_error"][-1], ddof=1) / np.sqrt(cells[c]["test_error"].shape[1]))
           if cells[c]["test_error"].shape[1] > 1 else float("nan") for c in CELLS}
    loss = {c: float(np.mean(cells[c]["train_loss"][-1])) for c in CELLS}
    miss = {c: err[c] * n_test for c in CELLS}
    per10k = {c: err[c] * TALK_TEST_SIZE for c in CELLS}

    def pair(a, b):
        return f"{miss[a]:.2f} vs {miss[b]:.2f}"

    talk_order = cell_order({c: TALK[c] for c in CELLS})
    order = cell_order(err)
    # strictly in the talk's order: a tie between two cells is not an order
    same_order = bool(all(err[a] < err[b] for a, b in zip(talk_order[:-1], talk_order[1:])))
    checks = [
        Check("large net beats small net (SGD and GD)",
              "mean test misclassifications: large < small, for SGD and for GD (talk: 174 < 256, 194 < 299)",
              f"of {n_test}: SGD {pair(('large', 'sgd'), ('small', 'sgd'))}; "
              f"GD {pair(('large', 'gd'), ('small', 'gd'))}",
              bool(err[("large", "sgd")] < err[("small", "sgd")] and err[("large", "gd")] < err[("small", "gd")]),
              SAGUN),
        Check("SGD beats GD (small and large net)",
              "mean test misclassifications: SGD < GD, for the small and the large net (talk: 256 < 299, 174 < 194)",
              f"of {n_test}: small {pair(('small', 'sgd'), ('small', 'gd'))}; "
              f"large {pair(('large', 'sgd'), ('large', 'gd'))}",
              bool(err[("small", "sgd")] < err[("small", "gd")] and err[("large", "sgd")] < err[("large", "gd")]),
              SAGUN),
        Check("same order of the four as the talk",
              " < ".join(_name(c) for c in talk_order) + " (174 < 194 < 256 < 299)",
              " < ".join(f"{_name(c)} ({miss[c]:.2f})" for c in order), same_order, SAGUN),
    ]
    table = {_name(c): {"talk_of_10000": TALK[c], "measured_of_test_set": round(miss[c], 2),
                        "measured_per_10000": round(per10k[c], 1), "test_error": err[c], "test_error_sem": sem[c],
                        "final_train_loss": loss[c]} for c in CELLS}
    metrics = {"dataset_inputs": int(n_in), "n_train": int(n_train), "n_test": int(n_test),
               "widths": dict(widths), "params": {k: int(v) for k, v in params.items()},
               "params_talk_784": {"small": cfg.small_params, "large": cfg.large_params},
               "steps": cfg.steps, "stopping_rule": f"{cfg.steps} updates, lr {cfg.lr:g}, {cfg.schedule} schedule",
               "table": table}
    arrays = {"steps": np.asarray(steps, dtype=float)}
    for c in CELLS:
        for key, value in cells[c].items():
            arrays[f"{c[0]}_{c[1]}_{key}"] = value
    notes = ("Misclassifications per 10K test images (measured, scaled from "
             f"{n_test}; talk in brackets): " + ", ".join(f"{_name(c)} {per10k[c]:.0f} [{TALK[c]}]" for c in CELLS)
             + f". Widths {widths['small']} and {widths['large']} ({params['small']} and {params['large']} "
             f"parameters on {n_in} inputs).")
    return StudyResult(metrics, checks, arrays, _figures(cfg, steps, cells, per10k, sem, n_test, widths),
                       notes=notes)


def _figures(cfg, steps, cells, per10k, sem, n_test, widths):
    import matplotlib.pyplot as plt

    fig1, ax = plt.subplots(figsize=(6, 3.8))
    x = np.arange(len(CELLS))
    ax.bar(x - 0.2, [TALK[c] for c in CELLS], 0.4, label="talk (MNIST, of 10K)", color="0.7")
    ax.bar(x + 0.2, [per10k[c] for c in CELLS], 0.4, label=f"measured ({cfg.dataset}, scaled to 10K)",
           yerr=[TALK_TEST_SIZE * sem[c] if np.isfinite(sem[c]) else 0 for c in CELLS], color="C0", capsize=3)
    ax.set_xticks(x, [f"{_name(c)}\nh={widths[c[0]]}" for c in CELLS])
    ax.set_ylabel("test misclassifications per 10,000")
    ax.set_title(f"GD vs SGD, small vs large ({cfg.seeds} seeds, {cfg.steps} updates)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")

    fig2, ax = plt.subplots(figsize=(6, 3.8))
    for c, color in zip(CELLS, ("C0", "C1", "C2", "C3")):
        te = cells[c]["test_error"]
        ax.plot(steps, 100 * te.mean(1), color=color, ls="-" if c[1] == "sgd" else "--", label=_name(c))
    ax.set_xlabel("update")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.set_title("Test error along training (seed mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return {"misclassifications": fig1, "test_error_vs_step": fig2}


STUDY = register(Study(
    name="gd-vs-sgd",
    description="Small vs large MLP, full-batch GD vs minibatch SGD: the talk's 2x2 table of test errors.",
    paper="Sagun, Guney, Ben Arous, LeCun 2014 (arXiv 1412.6615), the talk's table",
    config=GdVsSgdConfig, presets=PRESETS, run=run))
