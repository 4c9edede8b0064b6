"""Sample-wise double descent: at a fixed width, test error vs training-set size n is not monotone.

Nakkiran et al. 2019 (Deep Double Descent, Sec. 7, Fig. 3 and 11-12): the test-error peak sits where
the model's effective complexity equals n, i.e. at the largest n the model can still fit. Adding data
moves that threshold: for a model near it, n larger (up to the threshold) *hurts* -- "more data can
hurt" -- before it helps again past the threshold. With label noise the effect is strong.

Here: an in-h-h-out MLP of one width on nested training sets (each n a prefix of the next, one fixed
test set), the same label-noise fraction at every n, the same number of full-batch Adam steps; the
seeds of each n train together as one vmap ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import corrupt, load_dataset
from overparam.models import MLP, mlp_parameter_count
from overparam.studies.base import (Check, DATASET_SHAPES, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH, RunContext, Study,
                                    StudyResult, check_data_keys, data_bytes, mlp_training_bytes, register,
                                    training_batch)
from overparam.train import Diverged, TrainConfig, train_ensemble

NAKKIRAN = "Nakkiran et al. 2019 (Deep Double Descent), Sec. 7, Fig. 3 and Fig. 11"


@dataclass
class SampleDoubleDescentConfig(StudyConfig):
    dataset: str = param("mnist1d", "training data", choices=("mnist1d", "digits", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    sizes: list[int] = param([250, 500, 750, 1000, 1250, 1500, 2000, 3000, 4000],
                             "training-set sizes n (nested prefixes of one training set)", min=10, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    label_noise: float = param(0.15, "fraction of training labels replaced by a different label", min=0.0, max=1.0)
    width: int = param(32, "hidden width h of the in-h-h-out MLP (fixed)", min=1, max=MAX_WIDTH)
    depth: int = param(2, "number of hidden layers", min=1, max=8)
    optimizer: str = param("adam", "adam or gd (full batch), or sgd (minibatch, momentum)",
                           choices=("adam", "gd", "sgd"))
    lr: float = param(0.005, "learning rate", min=1e-8, max=10.0)
    momentum: float = param(0.9, "SGD momentum (optimizer=sgd)", min=0.0, max=0.999)
    batch_size: int = param(0, "minibatch size; 0 = full batch", min=0, max=MAX_EXAMPLES)
    steps: int = param(1000, "optimizer steps at every n (the same budget for every n)", min=1, max=MAX_STEPS)
    seeds: int = param(3, "initializations per n, trained as one vmap ensemble", min=1, max=64)
    margin: float = param(0.01, "rise in test error (absolute) that counts as 'more data hurts'", min=0.0, max=0.5)
    fit_tol: float = param(0.01, "training error at or below which a model counts as fitting its data",
                           min=0.0, max=0.5)

    def validate(self) -> None:
        if sorted(self.sizes) != list(self.sizes) or len(set(self.sizes)) != len(self.sizes):
            raise ConfigError("sizes: must be strictly increasing, e.g. 250,500,1000")
        if len(self.sizes) < 3:
            raise ConfigError("sizes: need at least 3 sizes to see a peak")
        check_data_keys(self.dataset, self.data_dir, self.sizes[-1], "sizes", self.n_test)

    def peak_bytes(self) -> dict[str, float]:
        d, k, _, _ = DATASET_SHAPES[self.dataset]
        batch = training_batch(self.optimizer, self.batch_size, self.sizes[-1])
        return {**data_bytes(self.dataset, self.sizes[-1], self.n_test, train_key="sizes"),
                "width": mlp_training_bytes(self.seeds, d, [self.width] * self.depth, k, batch)}


PRESETS = {
    # digits, width 8 (682 params): the threshold falls inside digits' 1257 images; 2000 full-batch Adam steps.
    "quick": {"dataset": "digits", "width": 8, "sizes": [100, 200, 300, 400, 600, 800, 1000, 1257],
              "label_noise": 0.2, "steps": 2000},
    # Denser n grid, more seeds and a longer budget, so every model below its threshold reaches it.
    "paper": {"sizes": [100, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000, 3500, 4000],
              "steps": 4000, "seeds": 8},
}


def run(cfg: SampleDoubleDescentConfig, ctx: RunContext) -> StudyResult:
    full = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.sizes[-1], n_test=cfg.n_test,
                        data_dir=(cfg.data_dir or ctx.data_dir) if cfg.dataset == "mnist" else None)
    n_in, n_out = full.input_dim, full.n_classes
    hidden = [cfg.width] * cfg.depth
    finals = np.zeros((len(cfg.sizes), cfg.seeds, 2))  # train error (on the noisy labels), test error
    for i, n in enumerate(cfg.sizes):
        # Noise is drawn per n so that every n carries exactly the same fraction of wrong labels.
        data = corrupt(full.subset(n, None), "label_noise", p=cfg.label_noise, seed=cfg.seed)
        batch = n if cfg.batch_size == 0 else cfg.batch_size
        tcfg = TrainConfig(optimizer=cfg.optimizer, lr=cfg.lr, batch_size=batch, steps=cfg.steps,
                           momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0, eval_every=10**12,
                           seed=cfg.seed)
        seeds = [(cfg.seed * 1_000_003 + n) * 101 + r for r in range(cfg.seeds)]
        _, hist = train_ensemble(lambda: MLP(n_in, hidden, n_out), seeds, data.X_train, data.y_train, tcfg,
                                 data.X_test, data.y_test, n_out,
                                 data_seeds=None if batch >= n else [cfg.seed * 7919 + r for r in range(cfg.seeds)],
                                 progress=ctx.progress, desc=f"n={n} ({i + 1}/{len(cfg.sizes)}) x{cfg.seeds}")
        if hist.diverged.any():
            raise Diverged(f"n={n} diverged at step {int(hist.diverged_at.max())} (lr={cfg.lr}); "
                           "lower the learning rate")
        final = hist.final()
        finals[i, :, 0], finals[i, :, 1] = final["train_error"], final["test_error"]
    params = mlp_parameter_count(n_in, hidden, n_out)
    return _summarize(cfg, params, finals[..., 0], finals[..., 1])


def more_data_hurts(sizes, test_err: np.ndarray, margin: float):
    """The largest increase err[j] - min(err[:j]) over the n grid, and the sizes it goes between."""
    best_rise, pair = -np.inf, (None, None)
    for j in range(1, len(test_err)):
        i = int(np.argmin(test_err[:j]))
        if test_err[j] - test_err[i] > best_rise:
            best_rise, pair = float(test_err[j] - test_err[i]), (int(sizes[i]), int(sizes[j]))
    return best_rise, pair, best_rise >= margin


def last_fitted_index(train_err: np.ndarray, tol: float) -> int | None:
    """Largest n whose training error is <= tol (the sample-wise interpolation threshold)."""
    hits = np.flatnonzero(train_err <= tol + 1e-12)
    return int(hits[-1]) if len(hits) else None


def _summarize(cfg, params, train_err, test_err) -> StudyResult:
    """train_err, test_err: (sizes, seeds) final errors."""
    sizes = np.array(cfg.sizes)
    tr, te = train_err.mean(1), test_err.mean(1)
    peak = int(np.argmax(te))
    rise, (n_from, n_to), hurts = more_data_hurts(sizes, te, cfg.margin)
    thr = last_fitted_index(tr, cfg.fit_tol)
    checks = [
        Check("more data hurts",
              f"test error at some n exceeds the best error at a smaller n by >= {100 * cfg.margin:g} points",
              f"{100 * rise:+.1f} points from n={n_from} to n={n_to}" if n_from is not None else "no pair",
              hurts, NAKKIRAN),
        Check("the peak sits at the sample-wise interpolation threshold",
              f"argmax over n of test error within one grid step of the largest n with train error <= "
              f"{100 * cfg.fit_tol:g}%",
              f"peak at n={sizes[peak]}, last fitted n=" + ("none" if thr is None else str(sizes[thr])),
              thr is not None and abs(peak - thr) <= 1,
              NAKKIRAN + " (peak where effective model complexity = n)"),
        Check("more data helps again past the peak",
              f"the peak lies inside the n grid and the test error at the largest n is below it by >= "
              f"{100 * cfg.margin:g} points",
              f"{100 * te[-1]:.1f}% at n={sizes[-1]} vs peak {100 * te[peak]:.1f}% at n={sizes[peak]}",
              0 < peak < len(sizes) - 1 and te[-1] <= te[peak] - cfg.margin, NAKKIRAN),
    ]
    metrics = {"width": cfg.width, "params": int(params), "label_noise": cfg.label_noise,
               "sizes": sizes.tolist(), "train_error": tr.tolist(), "test_error": te.tolist(),
               "peak_n": int(sizes[peak]), "peak_test_error": float(te[peak]),
               "last_fitted_n": None if thr is None else int(sizes[thr]),
               "params_per_example_at_threshold": None if thr is None else float(params / sizes[thr]),
               "largest_rise": rise, "rise_from_n": n_from, "rise_to_n": n_to}
    arrays = {"sizes": sizes, "train_error": train_err, "test_error": test_err}
    notes = (f"At width {cfg.width} ({params} parameters) the test error peaks at n={sizes[peak]} "
             f"({100 * te[peak]:.1f}%); going from n={n_from} to n={n_to} raises it by {100 * rise:.1f} points. "
             + ("The model fits its training set up to n=" + str(sizes[thr]) + "." if thr is not None
                else "The model fits none of the training sets."))
    return StudyResult(metrics, checks, arrays, {"sample_double_descent": _figure(cfg, sizes, train_err, test_err,
                                                                                    thr, peak, params)},
                       notes=notes)


def _figure(cfg, sizes, train_err, test_err, thr, peak, params):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    te, tr = test_err.mean(1), train_err.mean(1)
    ax.plot(sizes, 100 * te, "o-", color="C3", label="test error")
    if test_err.shape[1] > 1:
        ax.fill_between(sizes, 100 * test_err.min(1), 100 * test_err.max(1), color="C3", alpha=0.15, lw=0)
    ax.plot(sizes, 100 * tr, "s--", color="C0", label="train error (noisy labels)")
    if thr is not None:
        ax.axvline(sizes[thr], color="k", ls=":", lw=1.2, label=f"last n fitted (n={sizes[thr]})")
    ax.plot(sizes[peak], 100 * te[peak], "*", ms=16, color="C3", mec="k", label="peak")
    ax.set_xlabel("training examples n")
    ax.set_ylabel("error (%)")
    ax.set_title(f"Sample-wise double descent: MLP {cfg.depth}×{cfg.width} ({params} params), "
                 f"{int(round(100 * cfg.label_noise))}% noise", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


STUDY = register(Study(
    name="sample-double-descent",
    description="Test error vs training-set size at fixed width: more data hurts near the interpolation threshold.",
    paper="Nakkiran et al. 2019 (Deep Double Descent), Sec. 7",
    config=SampleDoubleDescentConfig, presets=PRESETS, run=run))
