"""Model-wise double descent: test error vs width peaks where the network first interpolates.

Belkin et al. 2019 (PNAS) and Nakkiran et al. 2019: with label noise, test error rises as the model
approaches the interpolation threshold (the smallest model that fits the noisy training set) and
falls again beyond it. Reference setup: the MNIST-1D notebook (Greydanus & Kobak), MLP 40-h-h-10,
15% label noise, SGD lr 0.01, momentum 0.9, batch 100, 500 epochs, 4000 training examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import corrupt, load_dataset
from overparam.models import mlp_parameter_count
from overparam.studies.base import (Check, DATASET_SHAPES, MAX_EPOCHS, MAX_EXAMPLES, MAX_WIDTH, RunContext, Study,
                                    StudyResult, check_data_keys, data_bytes, fmt, mlp_training_bytes, register,
                                    training_batch)
from overparam.train import Diverged, TrainConfig
from overparam.train.parallel import available_cores
from overparam.train.widths import train_mlp_widths

NOTEBOOK = "MNIST-1D notebook (Greydanus & Kobak 2024), MLP double descent with 15% label noise"
# (width h, test error) read from the MNIST-1D notebook's 15%-noise sweep (LITERATURE.md)
REFERENCE_POINTS = [(16, 0.472), (47, 0.54), (61, 0.54), (300, 0.455)]


@dataclass
class DoubleDescentConfig(StudyConfig):
    dataset: str = param("mnist1d", "training data", choices=("mnist1d", "digits", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    n_train: int | None = param(None, "training examples (none: the dataset's default, 4000 for mnist1d)", min=10,
                                max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default, 1000 for mnist1d)", min=10,
                               max=MAX_EXAMPLES)
    label_noise: float = param(0.15, "fraction of training labels replaced by a different label", min=0.0, max=1.0)
    widths: list[int] = param([2, 4, 8, 16, 32, 47, 61, 100, 300], "hidden widths h of the in-h-h-out MLP", min=1,
                              max=MAX_WIDTH)
    depth: int = param(2, "number of hidden layers", min=1, max=8)
    optimizer: str = param("sgd", "sgd (minibatch, momentum), adam, or gd (full batch)", choices=("sgd", "adam", "gd"))
    lr: float = param(0.01, "learning rate", min=1e-8, max=10.0)
    momentum: float = param(0.9, "SGD momentum", min=0.0, max=0.999)
    batch_size: int = param(100, "minibatch size", min=1, max=MAX_EXAMPLES)
    epochs: int = param(500, "passes over the training set", min=1, max=MAX_EPOCHS)
    repeats: int = param(1, "initializations per width (errors are averaged over them)", min=1, max=100)

    def validate(self) -> None:
        if sorted(self.widths) != list(self.widths) or len(set(self.widths)) != len(self.widths):
            raise ConfigError("widths: must be strictly increasing, e.g. 4,8,16,32")
        if len(self.widths) < 3:
            raise ConfigError("widths: need at least 3 widths to see a peak")
        # digits' sizes are left to the loader: a sweep over n_train=60,5000 on digits is the sweep tests'
        # example of points that fail at run time (tests/test_sweep.py)
        check_data_keys(self.dataset, self.data_dir)

    def peak_bytes(self) -> dict[str, float]:
        d, k, default_train, _ = DATASET_SHAPES[self.dataset]
        batch = training_batch(self.optimizer, self.batch_size, self.n_train or default_train)
        models = sum(mlp_training_bytes(self.repeats, d, [h] * self.depth, k, batch) for h in self.widths)
        return {**data_bytes(self.dataset, self.n_train, self.n_test), "widths": models}


PRESETS = {
    # The picture in under a minute: full-batch Adam interpolates in 1000 steps; widths straddle the threshold;
    # two initializations per width average out most of the init noise.
    "quick": {"widths": [16, 24, 32, 48, 64, 96, 128], "repeats": 3, "optimizer": "adam", "lr": 0.002,
              "batch_size": 4000, "epochs": 1000},
    # The MNIST-1D notebook's setup.
    "paper": {"widths": [2, 4, 8, 12, 16, 24, 32, 40, 47, 54, 61, 70, 85, 100, 150, 200, 300],
              "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 100, "epochs": 500},
}


def interpolation_index(train_error: np.ndarray, tol: float = 0.0) -> int | None:
    """First width whose training error is zero (<= tol): the interpolation threshold."""
    hits = np.flatnonzero(train_error <= tol + 1e-12)
    return int(hits[0]) if len(hits) else None


def run(cfg: DoubleDescentConfig, ctx: RunContext) -> StudyResult:
    data = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                        data_dir=cfg.data_dir or None)
    data = corrupt(data, "label_noise", p=cfg.label_noise, seed=cfg.seed)
    n_in, n_out = data.input_dim, data.n_classes
    tcfg = TrainConfig(optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0,
                       batch_size=cfg.batch_size, epochs=cfg.epochs, eval_every=10**12, seed=cfg.seed)
    # every (width, init) pair trains in one of a few padded vmap ensembles (overparam.train.widths)
    seeds = {h: [(cfg.seed * 1_000_003 + h) * 101 + r for r in range(cfg.repeats)] for h in cfg.widths}
    runs = train_mlp_widths(n_in, cfg.widths, n_out, seeds, data.X_train, data.y_train, tcfg, data.X_test,
                            data.y_test, n_out, depth=cfg.depth, progress=ctx.progress, workers=available_cores())
    finals = np.zeros((len(cfg.widths), cfg.repeats, 4))  # train_error, test_error, train_loss, test_loss
    for i, h in enumerate(cfg.widths):
        hist = runs[h].history
        if hist.diverged.any():
            raise Diverged(f"width {h} diverged at step {int(hist.diverged_at.max())} (lr={cfg.lr}); "
                           "lower the learning rate")
        final = hist.final()
        finals[i] = np.stack([final[k] for k in ("train_error", "test_error", "train_loss", "test_loss")], axis=1)
    params = [mlp_parameter_count(n_in, [h] * cfg.depth, n_out) for h in cfg.widths]
    train_err, test_err, train_loss, test_loss = finals.mean(axis=1).T
    test_se = (finals[:, :, 1].std(axis=1, ddof=1) / np.sqrt(cfg.repeats) if cfg.repeats > 1
               else np.zeros(len(cfg.widths)))
    return _summarize(cfg, data.n_train, np.array(params), train_err, test_err, train_loss, test_loss, test_se)


def _summarize(cfg, n_train, params, train_err, test_err, train_loss, test_loss, test_se=None) -> StudyResult:
    widths = np.array(cfg.widths)
    peak = int(np.argmax(test_err))
    thr = interpolation_index(train_err)
    # Widths whose mean test error is within one standard error (over inits) of the maximum are tied
    # with the peak: with few inits the argmax among them is noise, so any of them may stand for it.
    se = np.zeros(len(widths)) if test_se is None else np.asarray(test_se)
    tied = np.flatnonzero(test_err >= test_err[peak] - se[peak])
    near = [int(i) for i in tied if thr is not None and abs(int(i) - thr) <= 1]
    metrics = {
        "peak_width": int(widths[peak]), "peak_params": int(params[peak]), "peak_test_error": float(test_err[peak]),
        "threshold_width": None if thr is None else int(widths[thr]),
        "threshold_params": None if thr is None else int(params[thr]),
        "test_error_smallest": float(test_err[0]), "test_error_largest": float(test_err[-1]),
        "n_train": int(n_train), "widths": widths.tolist(), "params": params.tolist(),
        "train_error": train_err.tolist(), "test_error": test_err.tolist(),
    }
    checks = [
        Check("peak sits at the interpolation threshold",
              "argmax of test error (or a width tied with it within one standard error over inits) within "
              "one grid step of the first width with zero training error",
              f"peak at h={widths[peak]}" + (f" (tied: h={', '.join(str(widths[i]) for i in tied if i != peak)})"
                                             if len(tied) > 1 else "") + ", threshold at "
              + ("none (never interpolates)" if thr is None else f"h={widths[thr]}"),
              bool(near),
              "Belkin et al. 2019 (PNAS), Fig. 1; Nakkiran et al. 2019, Fig. 1"),
        Check("peak error exceeds both ends", "test error at the peak > at the smallest and the largest width",
              f"{fmt(test_err[peak])} vs {fmt(test_err[0])} (h={widths[0]}) and {fmt(test_err[-1])} (h={widths[-1]})",
              peak not in (0, len(widths) - 1) and test_err[peak] > max(test_err[0], test_err[-1]), NOTEBOOK),
        Check("threshold is of the order of the training-set size",
              f"params at threshold between n/2 and 4n (n={n_train}; notebook: 6.9K params at n=4000)",
              "none" if thr is None else f"{params[thr]} params = {params[thr] / n_train:.2f} n",
              thr is not None and 0.5 * n_train <= params[thr] <= 4 * n_train,
              "Nakkiran et al. 2019 (effective model complexity ~ n); " + NOTEBOOK),
    ]
    if _is_reference_setup(cfg):
        big = test_err[-1]
        checks.append(Check("error at the widest model (h=300)", "45.5% ± 5 points", f"{100 * big:.1f}%",
                            abs(big - 0.455) <= 0.05, NOTEBOOK))
        checks.append(Check("peak test error", "54% ± 5 points", f"{100 * test_err[peak]:.1f}%",
                            abs(test_err[peak] - 0.54) <= 0.05, NOTEBOOK))
    arrays = {"widths": widths, "params": params, "train_error": train_err, "test_error": test_err, "test_se": se,
              "train_loss": train_loss, "test_loss": test_loss}
    notes = (f"Test error peaks at h={widths[peak]} ({100 * test_err[peak]:.1f}%), "
             + (f"where training error first reaches zero at h={widths[thr]}. " if thr is not None
                else "and no width reached zero training error. ")
             + f"It falls to {100 * test_err[-1]:.1f}% at h={widths[-1]}.")
    return StudyResult(metrics, checks, arrays, {"double_descent": _figure(cfg, params, train_err, test_err, thr, peak)},
                       notes=notes)


def _is_reference_setup(cfg: DoubleDescentConfig) -> bool:
    return (cfg.dataset == "mnist1d" and cfg.n_train in (None, 4000) and abs(cfg.label_noise - 0.15) < 1e-9
            and cfg.depth == 2 and cfg.optimizer == "sgd" and cfg.epochs >= 500 and cfg.widths[-1] == 300)


def _figure(cfg, params, train_err, test_err, thr, peak):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(params, 100 * test_err, "o-", color="C3", label="test error")
    ax.plot(params, 100 * train_err, "s--", color="C0", label="train error")
    if thr is not None:
        ax.axvline(params[thr], color="k", ls=":", lw=1.2, label=f"interpolation threshold (h={cfg.widths[thr]})")
    ax.plot(params[peak], 100 * test_err[peak], "*", ms=16, color="C3", mec="k", label="peak")
    if cfg.dataset == "mnist1d" and cfg.depth == 2:
        ref_p = [mlp_parameter_count(40, [h, h], 10) for h, _ in REFERENCE_POINTS]
        ax.plot(ref_p, [100 * e for _, e in REFERENCE_POINTS], "x", color="gray", ms=9,
                label="MNIST-1D notebook (4000 train, SGD 500 ep.)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("error (%)")
    ax.set_title(f"Double descent: MLP {cfg.depth}×h, {int(100 * cfg.label_noise)}% label noise, {cfg.dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


STUDY = register(Study(
    name="double-descent",
    description="Test error vs width: a peak at the interpolation threshold, then a second descent.",
    paper="Belkin et al. 2019 (PNAS); Nakkiran et al. 2019; MNIST-1D notebook (Greydanus & Kobak 2024)",
    config=DoubleDescentConfig, presets=PRESETS, run=run))
