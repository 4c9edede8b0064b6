"""Memorization: the same network fits true labels, partly or fully random labels, and random inputs.

Zhang et al. 2017 ("Understanding deep learning requires rethinking generalization", Fig. 1): one
architecture, trained with the same optimizer and no regularization, reaches 100% training accuracy on
true labels, on labels partly or fully replaced at random, on shuffled pixels, random pixels and Gaussian
inputs; the time to fit grows with the label corruption (random labels take "a small constant factor"
longer), and the test error grows with the corruption until it reaches chance at p = 1 (Fig. 1b, 1c).
Arpit et al. 2017 ("A closer look at memorization") add that real data is fitted first and faster than
noise.

Here: one MLP (in-h-...-h-out) per condition, seeds as the replicas of a vmap ensemble, so each condition
is one ensemble with its own data. Label corruption p follows Zhang et al.: a seeded fraction p of the
training labels is replaced by a class drawn uniformly from all C classes (so about p(1-1/C) of them
change, and p = 1 is exactly ``corrupt(kind="random_labels")``); the corrupted sets are nested (the
examples relabelled at p = 0.2 are relabelled the same way at p = 0.4). Input corruptions use
:func:`overparam.data.corrupt` with its defaults. Curves are evaluated once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import corrupt, load_dataset
from overparam.models import MLP, mlp_parameter_count
from overparam.studies.base import (Check, DATASET_SHAPES, MAX_EPOCHS, MAX_EXAMPLES, RunContext, Study, StudyResult,
                                    check_data_keys, data_bytes, fmt, mlp_training_bytes, register, training_batch)
from overparam.train import Diverged, TrainConfig, train_ensemble

ZHANG = "Zhang et al. 2017 (Understanding deep learning requires rethinking generalization)"
INPUT_CORRUPTIONS = ("shuffled_pixels", "random_pixels", "gaussian")


@dataclass
class MemorizationConfig(StudyConfig):
    dataset: str = param("digits", "training data", choices=("digits", "mnist1d", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    n_train: int | None = param(None, "training examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    width: int = param(512, "hidden width h of the MLP (Zhang et al.'s MLP 1x512)", min=1, max=16384)
    depth: int = param(1, "number of hidden layers", min=1, max=8)
    corruptions: list[float] = param([0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                     "label-corruption levels p (fraction of labels redrawn uniformly)",
                                     min=0.0, max=1.0)
    inputs: list[str] = param(list(INPUT_CORRUPTIONS), "input corruptions, trained on the true labels",
                              choices=INPUT_CORRUPTIONS)
    optimizer: str = param("sgd", "sgd (with momentum), adam, or gd (full batch)", choices=("sgd", "adam", "gd"))
    lr: float = param(0.01, "learning rate", min=1e-8, max=10.0)
    momentum: float = param(0.9, "SGD momentum (optimizer=sgd)", min=0.0, max=0.999)
    batch_size: int = param(128, "minibatch size", min=1, max=MAX_EXAMPLES)
    epochs: int = param(200, "passes over the training set (the budget every condition gets)", min=1, max=MAX_EPOCHS)
    seeds: int = param(3, "initializations (and data orders) per condition, trained as one vmap ensemble",
                       min=1, max=64)
    fit_accuracy: float = param(1.0, "training accuracy that counts as fitted (steps-to-fit)", min=0.5, max=1.0)
    memorize_accuracy: float = param(0.99, "training accuracy random labels must reach (check)", min=0.5,
                                     max=1.0)
    min_spearman: float = param(0.8, "Spearman rho of steps-to-fit vs p that counts as 'grows' (check)",
                                min=-1.0, max=1.0)
    chance_tolerance: float = param(0.05, "|test error - (1 - 1/C)| allowed at the largest p (check)",
                                    min=0.0, max=1.0)

    def validate(self) -> None:
        if len(self.corruptions) < 3:
            raise ConfigError("corruptions: give at least 3 label-corruption levels (the trend check needs them)")
        if sorted(set(self.corruptions)) != list(self.corruptions):
            raise ConfigError("corruptions: levels must be distinct and increasing, e.g. 0,0.2,0.4,0.6,0.8,1")
        check_data_keys(self.dataset, self.data_dir, self.n_train, n_test=self.n_test)

    def peak_bytes(self) -> dict[str, float]:
        d, k, default_train, _ = DATASET_SHAPES[self.dataset]
        batch = training_batch(self.optimizer, self.batch_size, self.n_train or default_train)
        return {**data_bytes(self.dataset, self.n_train, self.n_test, copies=3),
                "width": mlp_training_bytes(self.seeds, d, [self.width] * self.depth, k, batch)}


PRESETS = {
    # 500 digits, MLP 64-128-10 (9.6K params, 19 per image, Zhang's 1x512 on CIFAR-10 has 31), SGD+momentum at a
    # large step: every condition fits within 150 epochs. (At h=512, 77 params per image, every p >= 0.2 took
    # about the same time, so the trend drowned in seed noise.)
    "quick": {"dataset": "digits", "n_train": 500, "width": 128, "lr": 0.1, "batch_size": 50, "epochs": 150,
              "seeds": 3},
    # Zhang et al.'s MLP 1x512 with SGD (lr 0.01, momentum 0.9), on MNIST-1D's reference split, long budget.
    "paper": {"dataset": "mnist1d", "width": 512, "lr": 0.01, "momentum": 0.9, "batch_size": 128,
              "epochs": 3000, "seeds": 5},
}


def zhang_label_corruption(y: torch.Tensor, n_classes: int, p: float, seed: int) -> torch.Tensor:
    """Zhang et al.'s partially corrupted labels: round(p*n) examples, chosen by a seeded permutation,
    get a label drawn uniformly from all classes; the chosen sets are nested in p."""
    n = len(y)
    order = np.random.default_rng([seed, 0x5A17]).permutation(n)
    fresh = torch.from_numpy(np.random.default_rng([seed, 0x1AB1]).integers(0, n_classes, size=n))
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[torch.from_numpy(order[:int(np.floor(p * n + 0.5))])] = True
    return torch.where(chosen, fresh.to(y.dtype), y)


def conditions(cfg: MemorizationConfig) -> list[tuple[str, str, float | None]]:
    """(key, label, p) of every trained condition, label corruptions first."""
    out = [(f"p={p:g}", f"labels p={p:g}", float(p)) for p in cfg.corruptions]
    names = {"shuffled_pixels": "shuffled pixels", "random_pixels": "random pixels", "gaussian": "Gaussian inputs"}
    return out + [(kind, names[kind], None) for kind in cfg.inputs]


def steps_to_fit(steps: np.ndarray, train_error: np.ndarray, fit_accuracy: float) -> np.ndarray:
    """First evaluated step with train accuracy >= fit_accuracy, per replica (NaN if never).

    train_error: (evaluations, replicas)."""
    steps = np.asarray(steps, dtype=float)
    hit = np.asarray(train_error) <= (1.0 - fit_accuracy) + 1e-9
    first = np.where(hit.any(0), hit.argmax(0), -1)
    return np.where(first >= 0, steps[np.maximum(first, 0)], np.nan)


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either side is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def run(cfg: MemorizationConfig, ctx: RunContext) -> StudyResult:
    torch.set_num_threads(1)
    clean = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                         data_dir=(cfg.data_dir or ctx.data_dir) if cfg.dataset == "mnist" else None)
    n_in, n_out = clean.input_dim, clean.n_classes
    hidden = [cfg.width] * cfg.depth
    tcfg = TrainConfig(optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0,
                       batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed)  # evaluates once per epoch
    seeds = [cfg.seed * 1_000_003 + 101 * r + 7 for r in range(cfg.seeds)]  # same inits in every condition
    data_seeds = [cfg.seed * 7919 + 17 * r + 1 for r in range(cfg.seeds)]
    curves, steps = {}, None
    conds = conditions(cfg)
    for i, (key, label, p) in enumerate(conds):
        if p is not None:
            X, y, X_test = clean.X_train, zhang_label_corruption(clean.y_train, n_out, p, cfg.seed), clean.X_test
        else:
            data = corrupt(clean, key, seed=cfg.seed)
            X, y, X_test = data.X_train, data.y_train, data.X_test
        _, hist = train_ensemble(lambda: MLP(n_in, hidden, n_out), seeds, X, y, tcfg, X_test, clean.y_test, n_out,
                                 data_seeds=data_seeds if cfg.optimizer != "gd" else None,
                                 progress=ctx.progress, desc=f"{label} ({i + 1}/{len(conds)}) x{cfg.seeds}")
        if hist.diverged.any():
            raise Diverged(f"{label} diverged at step {int(hist.diverged_at.max())} (lr={cfg.lr}); "
                           "lower the learning rate")
        steps = np.asarray(hist.step)
        curves[key] = (hist.curves("train_error"), hist.curves("test_error"))
    params = mlp_parameter_count(n_in, hidden, n_out)
    return _summarize(cfg, steps, curves, n_out, clean.n_train, params)


def _summarize(cfg, steps, curves, n_classes, n_train, params) -> StudyResult:
    """curves: condition key -> (train_error, test_error), each (evaluations, seeds)."""
    conds = conditions(cfg)
    chance = 1.0 - 1.0 / n_classes
    fit = {key: steps_to_fit(steps, curves[key][0], cfg.fit_accuracy) for key, _, _ in conds}
    final_train_acc = {key: 1.0 - curves[key][0][-1] for key, _, _ in conds}
    final_test = {key: curves[key][1][-1] for key, _, _ in conds}
    levels = [(key, p) for key, _, p in conds if p is not None]
    ps = np.array([p for _, p in levels])
    # A replica that never fits counts as the whole budget (a lower bound of its time to fit).
    budget = float(steps[-1])
    fit_time = np.array([np.nanmean(np.where(np.isnan(fit[k]), budget, fit[k])) for k, _ in levels])
    all_fit = {k: bool(np.all(~np.isnan(fit[k]))) for k, _, _ in conds}
    rho = spearman(ps, fit_time)
    test_err = np.array([final_test[k].mean() for k, _ in levels])
    k0, k1 = levels[0][0], levels[-1][0]
    p0, p1 = levels[0][1], levels[-1][1]
    random_acc = float(final_train_acc[k1].min())
    ratio = fit_time[-1] / fit_time[0] if fit_time[0] > 0 else float("nan")

    def fit_str(key):
        f = fit[key]
        return (f"{np.nanmean(f):.0f}" if all_fit[key] else
                f">{budget:.0f} ({int(np.sum(np.isnan(f)))}/{len(f)} not fitted)")

    checks = [
        Check(f"labels at p={p1:g} are memorized",
              f"every seed reaches >= {100 * cfg.memorize_accuracy:g}% training accuracy (h={cfg.width})",
              f"min over seeds {100 * random_acc:.2f}%", bool(random_acc >= cfg.memorize_accuracy),
              ZHANG + ", Fig. 1a, Table 1 (MLP 1x512 fits random labels; pluskid/fitting-random-labels: 99.97% train)"),
        Check("time to fit grows with label corruption",
              f"Spearman rho(p, steps to {100 * cfg.fit_accuracy:g}% train acc.) >= {cfg.min_spearman:g} and "
              f"p={p1:g} slower than p={p0:g}",
              f"rho = {fmt(rho)}; steps " + ", ".join(f"{p:g}:{fit_str(k)}" for k, p in levels),
              bool(np.isfinite(rho) and rho >= cfg.min_spearman and fit_time[-1] > fit_time[0]),
              ZHANG + ", Fig. 1b (time to overfit vs label corruption)"),
        Check(f"test error at p={p1:g} is near chance",
              f"|test error - (1 - 1/C)| <= {100 * cfg.chance_tolerance:g} points (chance {100 * chance:.0f}%)",
              f"{100 * test_err[-1]:.1f}%", bool(p1 == 1.0 and abs(test_err[-1] - chance) <= cfg.chance_tolerance),
              ZHANG + ", Fig. 1c (test error -> chance as labels become random)"),
        Check(f"true labels generalize (p={p0:g})",
              "test error with true labels below half of chance",
              f"{100 * test_err[0]:.1f}% vs chance {100 * chance:.0f}%", bool(p0 == 0.0 and test_err[0] < chance / 2),
              ZHANG + ", Fig. 1c / Table 1"),
    ]
    inputs = [(k, lab) for k, lab, p in conds if p is None]
    if inputs:
        worst = min(float(final_train_acc[k].min()) for k, _ in inputs)
        checks.append(Check(
            "random inputs are memorized too",
            f"every input corruption, every seed, reaches >= {100 * cfg.memorize_accuracy:g}% training accuracy",
            ", ".join(f"{lab}: {100 * float(final_train_acc[k].min()):.1f}%" for k, lab in inputs),
            bool(worst >= cfg.memorize_accuracy), ZHANG + ", Fig. 1a (shuffled/random pixels, Gaussian inputs)"))

    metrics = {
        "n_train": int(n_train), "width": cfg.width, "depth": cfg.depth, "params": int(params),
        "params_per_example": round(params / n_train, 2), "chance_error": chance,
        "budget_steps": int(budget),
        "steps_to_fit": {lab: (float(np.nanmean(fit[k])) if all_fit[k] else None) for k, lab, _ in conds},
        "steps_to_fit_with_budget": {f"p={p:g}": float(t) for (_, p), t in zip(levels, fit_time)},
        "fitted_all_seeds": {lab: all_fit[k] for k, lab, _ in conds},
        "final_train_accuracy": {lab: float(final_train_acc[k].mean()) for k, lab, _ in conds},
        "final_test_error": {lab: float(final_test[k].mean()) for k, lab, _ in conds},
        "spearman_fit_time_vs_p": rho,
        "fit_time_ratio_random_vs_true": float(ratio),
    }
    arrays = {"steps": np.asarray(steps, dtype=float), "label_corruption": ps,
              "steps_to_fit": fit_time, "test_error_vs_p": test_err}
    for key, _, _ in conds:
        arrays[f"{key}_train_error"] = curves[key][0]
        arrays[f"{key}_test_error"] = curves[key][1]
    notes = (f"MLP h={cfg.width} ({params} params, {n_train} examples): steps to {100 * cfg.fit_accuracy:g}% train "
             f"accuracy go from {fit_str(k0)} (p={p0:g}) to {fit_str(k1)} (p={p1:g}), Spearman rho {fmt(rho)}; "
             f"test error {100 * test_err[0]:.1f}% -> {100 * test_err[-1]:.1f}% (chance {100 * chance:.0f}%).")
    return StudyResult(metrics, checks, arrays, _figures(cfg, steps, curves, conds, ps, fit_time, test_err, chance),
                       notes=notes)


def _figures(cfg, steps, curves, conds, ps, fit_time, test_err, chance):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    fig1, ax = plt.subplots(figsize=(7, 4.2))
    n_lab = len(ps)
    for j, (key, label, p) in enumerate(conds):
        acc = 1 - curves[key][0].mean(1)
        style = dict(color=cmap(j / max(n_lab - 1, 1) * 0.9), lw=1.6) if p is not None else dict(ls="--", lw=1.4)
        ax.plot(steps, 100 * acc, label=label, **style)
    ax.set_xlabel("step")
    ax.set_ylabel("train accuracy (%)")
    ax.set_title(f"Memorization: MLP h={cfg.width} on {cfg.dataset}, {cfg.seeds} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)

    fig2, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(ps, fit_time, "o-")
    ax.set_xlabel("label corruption p")
    ax.set_ylabel(f"steps to {100 * cfg.fit_accuracy:g}% train accuracy")
    ax.set_title("Time to fit grows with label noise")
    ax.grid(alpha=0.3)

    fig3, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(ps, 100 * test_err, "o-", label="test error (final)")
    ax.axhline(100 * chance, color="gray", ls=":", label="chance")
    ax.set_xlabel("label corruption p")
    ax.set_ylabel("test error (%)")
    ax.set_title("Test error goes to chance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return {"train_accuracy_vs_step": fig1, "steps_to_fit_vs_corruption": fig2, "test_error_vs_corruption": fig3}


STUDY = register(Study(
    name="memorization",
    description="One MLP fits true, partly random and random labels and random inputs; time to fit grows with noise.",
    paper="Zhang et al. 2017 (rethinking generalization), Fig. 1; Arpit et al. 2017",
    config=MemorizationConfig, presets=PRESETS, run=run))
