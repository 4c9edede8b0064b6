"""Epoch-wise double descent: test error vs training time, for a model near the threshold and a large one.

Nakkiran et al. 2019 (Deep Double Descent, Sec. 6 and Fig. 9-10; ResNet18 on CIFAR-10, 20% label
noise, Adam): a model too small to fit the noisy training set improves monotonically with training;
a *medium* model, which training to completion only barely fits, follows the classical U -- test error
falls, then rises as it memorizes the noisy labels and stays up ("it is better to stop early");
a *large* model falls, rises, and falls again ("epoch-wise double descent"). The effective model
complexity grows with training time, so training longer sweeps the model through its threshold.

Here: an in-h-h-out MLP on label-noised data; all seeds of one width train together as a vmap
ensemble, each with its own init and data order; the curves are seed means, evaluated every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import corrupt, load_dataset
from overparam.models import MLP, mlp_parameter_count
from overparam.studies.base import (Check, DATASET_SHAPES, MAX_EPOCHS, MAX_EXAMPLES, MAX_WIDTH, RunContext, Study,
                                    StudyResult, check_data_keys, data_bytes, mlp_training_bytes, register,
                                    training_batch)
from overparam.train import Diverged, TrainConfig, train_ensemble

NAKKIRAN = "Nakkiran et al. 2019 (Deep Double Descent), Sec. 6, Fig. 9 (ResNet18/CIFAR-10, 20% label noise)"


@dataclass
class EpochDoubleDescentConfig(StudyConfig):
    dataset: str = param("mnist1d", "training data", choices=("mnist1d", "digits", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    n_train: int | None = param(None, "training examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    label_noise: float = param(0.2, "fraction of training labels replaced by a different label", min=0.0, max=1.0)
    threshold_width: int = param(64, "hidden width h of the model near the interpolation threshold", min=1,
                                 max=MAX_WIDTH)
    large_width: int = param(512, "hidden width h of the large model", min=1, max=MAX_WIDTH)
    depth: int = param(2, "number of hidden layers", min=1, max=8)
    optimizer: str = param("adam", "adam, sgd (with momentum), or gd (full batch)", choices=("adam", "sgd", "gd"))
    lr: float = param(0.001, "learning rate", min=1e-8, max=10.0)
    momentum: float = param(0.9, "SGD momentum (optimizer=sgd)", min=0.0, max=0.999)
    batch_size: int = param(100, "minibatch size", min=1, max=MAX_EXAMPLES)
    epochs: int = param(1000, "passes over the training set", min=10, max=MAX_EPOCHS)
    seeds: int = param(3, "initializations (and data orders) per width, trained as one vmap ensemble", min=1,
                       max=64)
    margin: float = param(0.02, "rise/fall in test error (absolute) that counts as a bump or a descent",
                          min=0.0, max=0.5)

    def validate(self) -> None:
        if self.large_width <= self.threshold_width:
            raise ConfigError("large_width: must exceed threshold_width")
        check_data_keys(self.dataset, self.data_dir, self.n_train, n_test=self.n_test)

    def peak_bytes(self) -> dict[str, float]:
        d, k, default_train, _ = DATASET_SHAPES[self.dataset]
        batch = training_batch(self.optimizer, self.batch_size, self.n_train or default_train)
        return {**data_bytes(self.dataset, self.n_train, self.n_test),
                "large_width": mlp_training_bytes(self.seeds, d, [self.large_width] * self.depth, k, batch)}


PRESETS = {
    # digits (1257 train): the bump is sharp and training is fast; lr 0.003 compresses Nakkiran's long schedule.
    "quick": {"dataset": "digits", "threshold_width": 48, "large_width": 512, "lr": 0.003, "epochs": 150},
    # Nakkiran's protocol on MNIST-1D's reference split: Adam, 20% noise, long training.
    "paper": {"dataset": "mnist1d", "label_noise": 0.2, "threshold_width": 64, "large_width": 1024,
              "epochs": 4000, "seeds": 5},
}


def epoch_profile(test_error: np.ndarray, tail: float = 0.05) -> dict:
    """Shape of a test-error-vs-time curve.

    peak: the evaluation where the error stands highest above its running minimum (the memorization
    bump); early minimum: the lowest error up to the peak; final: mean of the last ``tail`` fraction of
    evaluations. rise = peak - early minimum; descent = peak - final.
    """
    err = np.asarray(test_error, dtype=float)
    running_min = np.minimum.accumulate(err)
    peak = int(np.argmax(err - running_min))
    low = int(np.argmin(err[:peak + 1]))
    k = max(1, int(round(tail * len(err))))
    final = float(err[-k:].mean())
    return {"min_index": low, "min_error": float(err[low]), "peak_index": peak, "peak_error": float(err[peak]),
            "final_error": final, "rise": float(err[peak] - err[low]), "descent": float(err[peak] - final)}


def run(cfg: EpochDoubleDescentConfig, ctx: RunContext) -> StudyResult:
    data = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                        data_dir=(cfg.data_dir or ctx.data_dir) if cfg.dataset == "mnist" else None)
    data = corrupt(data, "label_noise", p=cfg.label_noise, seed=cfg.seed)
    n_in, n_out = data.input_dim, data.n_classes
    tcfg = TrainConfig(optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0,
                       batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed)  # evaluates once per epoch
    curves = {}
    for role, h in (("threshold", cfg.threshold_width), ("large", cfg.large_width)):
        hidden = [h] * cfg.depth
        seeds = [(cfg.seed * 1_000_003 + h) * 101 + r for r in range(cfg.seeds)]
        data_seeds = [cfg.seed * 7919 + 17 * r + 1 for r in range(cfg.seeds)]
        _, hist = train_ensemble(lambda: MLP(n_in, hidden, n_out), seeds, data.X_train, data.y_train, tcfg,
                                 data.X_test, data.y_test, n_out, data_seeds=data_seeds, progress=ctx.progress,
                                 desc=f"{role} model h={h} x{cfg.seeds}")
        if hist.diverged.any():
            raise Diverged(f"width {h} diverged at step {int(hist.diverged_at.max())} (lr={cfg.lr}); "
                           "lower the learning rate")
        curves[role] = (hist.curves("test_error"), hist.curves("train_error"))
    _, per_epoch, _ = tcfg.plan(data.n_train)
    epochs = np.array(hist.step) / per_epoch
    params = {role: mlp_parameter_count(n_in, [h] * cfg.depth, n_out)
              for role, h in (("threshold", cfg.threshold_width), ("large", cfg.large_width))}
    return _summarize(cfg, data.n_train, epochs, params, curves)


def _summarize(cfg, n_train, epochs, params, curves) -> StudyResult:
    """curves: role -> (test_error, train_error), each (evaluations, seeds)."""
    mean = {role: (te.mean(1), tr.mean(1)) for role, (te, tr) in curves.items()}
    prof = {role: epoch_profile(te) for role, (te, _) in mean.items()}
    thr, big = prof["threshold"], prof["large"]
    d = cfg.margin

    def at(p, key):
        return f"epoch {epochs[p[key]]:g}"

    def describe(p):
        return (f"min {100 * p['min_error']:.1f}% at {at(p, 'min_index')}, peak {100 * p['peak_error']:.1f}% at "
                f"{at(p, 'peak_index')}, final {100 * p['final_error']:.1f}%")

    checks = [
        Check("large model: epoch-wise double descent",
              f"test error rises by >= {100 * d:g} points after an early minimum, then falls by >= {100 * d:g} "
              "points from that peak by the end of training", f"h={cfg.large_width}: " + describe(big),
              big["rise"] >= d and big["descent"] >= d, NAKKIRAN + ", large model"),
        Check("model near threshold: rises and stays (early stopping wins)",
              f"test error rises by >= {100 * d:g} points after an early minimum and does not fall again by "
              f"{100 * d:g} points", f"h={cfg.threshold_width}: " + describe(thr),
              thr["rise"] >= d and thr["descent"] < d, NAKKIRAN + ", medium model (classical U)"),
        Check("large model ends better than the threshold model",
              "final test error of the large model < that of the model near the threshold",
              f"{100 * big['final_error']:.1f}% (h={cfg.large_width}) vs {100 * thr['final_error']:.1f}% "
              f"(h={cfg.threshold_width})", big["final_error"] < thr["final_error"],
              "Nakkiran et al. 2019, Fig. 2 (model-wise double descent at the end of training)"),
    ]
    fit_epoch = {}
    for role, (_, tr) in mean.items():
        hits = np.flatnonzero(tr <= 0.01)
        fit_epoch[role] = float(epochs[hits[0]]) if len(hits) else None
    metrics = {"n_train": int(n_train), "label_noise": cfg.label_noise,
               "threshold_width": cfg.threshold_width, "large_width": cfg.large_width,
               "params": {k: int(v) for k, v in params.items()},
               "fits_train_set_at_epoch": fit_epoch,
               **{f"{role}_{k}": (float(epochs[v]) if k.endswith("index") else v)
                  for role, p in prof.items() for k, v in p.items()},
               "final_train_error": {role: float(tr[-1]) for role, (_, tr) in mean.items()}}
    metrics = {k.replace("_index", "_epoch"): v for k, v in metrics.items()}
    arrays = {"epochs": np.asarray(epochs, dtype=float)}
    for role, (te, tr) in curves.items():
        arrays[f"{role}_test_error"] = te
        arrays[f"{role}_train_error"] = tr
    notes = (f"Large model (h={cfg.large_width}): {describe(big)}; model near threshold (h={cfg.threshold_width}): "
             f"{describe(thr)}.")
    return StudyResult(metrics, checks, arrays, {"epoch_double_descent": _figure(cfg, epochs, curves, prof)},
                       notes=notes)


def _figure(cfg, epochs, curves, prof):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.maximum(epochs, epochs[1] / 2 if len(epochs) > 1 else 1)  # epoch 0 drawn at half the first epoch
    for (role, (te, tr)), color in zip(curves.items(), ("C0", "C3")):
        h = cfg.threshold_width if role == "threshold" else cfg.large_width
        m = te.mean(1)
        ax.plot(x, 100 * m, color=color, lw=1.6, label=f"test, h={h} ({role})")
        if te.shape[1] > 1:
            ax.fill_between(x, 100 * te.min(1), 100 * te.max(1), color=color, alpha=0.15, lw=0)
        ax.plot(x, 100 * tr.mean(1), "--", color=color, lw=1, alpha=0.8, label=f"train, h={h}")
        p = prof[role]
        ax.plot(x[p["min_index"]], 100 * p["min_error"], "v", color=color, mec="k", ms=8)
        ax.plot(x[p["peak_index"]], 100 * p["peak_error"], "^", color=color, mec="k", ms=8)
    ax.axhline(100 * cfg.label_noise, color="gray", ls=":", lw=1, label="label noise")
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(f"Epoch-wise double descent: {cfg.dataset}, {int(round(100 * cfg.label_noise))}% label noise, "
                 f"{cfg.seeds} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


STUDY = register(Study(
    name="epoch-double-descent",
    description="Test error vs epoch: the model near the threshold rises and stays, the large one descends twice.",
    paper="Nakkiran et al. 2019 (Deep Double Descent), Sec. 6",
    config=EpochDoubleDescentConfig, presets=PRESETS, run=run))
