"""Shared pieces of the associative-memory network studies: data, a training loop, the noise score.

The noise score follows Ahmad & Scheinkman 2019 ("How can we be so dense?"): in every test example a
fraction p of the input entries (p = 0, 0.05, ..., 0.5) is replaced by the value mean + 2 SD of the
training inputs; the score is the number of correct answers summed over the levels (their MNIST maximum:
11 levels x 10,000 = 110,000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from overparam.config import StudyConfig, param
from overparam.studies.base import MAX_EXAMPLES, data_bytes
from overparam.data import load_dataset

NOISE_LEVELS = tuple(round(0.05 * i, 2) for i in range(11))
NOISE_SOURCE = "Ahmad & Scheinkman 2019 (noise score: 11 levels of replaced inputs)"


@dataclass
class NetworkDataConfig(StudyConfig):
    """The data keys every network study of this family shares (read by :func:`load_capped`)."""

    dataset: str = param("mnist1d", "training data (digits has 1257 / 540 examples at most)",
                         choices=("mnist1d", "digits"))
    n_train: int = param(4000, "training examples", min=50, max=MAX_EXAMPLES)
    n_test: int = param(1000, "test examples", min=50, max=MAX_EXAMPLES)

    def peak_bytes(self) -> dict[str, float]:
        return data_bytes(self.dataset, self.n_train, self.n_test, copies=3)   # clean, noisy and batched inputs


def load_capped(dataset: str, seed: int, n_train: int, n_test: int):
    """load_dataset, but digits (1257 / 540 examples) gives at most what it has instead of an error."""
    if dataset == "digits":
        full = load_dataset("digits", seed=seed)
        return full.subset(min(n_train, full.n_train), min(n_test, full.n_test))
    return load_dataset(dataset, seed=seed, n_train=n_train, n_test=n_test)


def fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int, seed: int,
        penalty: Callable[[nn.Module], torch.Tensor] | None = None, bar=None,
        after_step: Callable[[nn.Module], None] | None = None) -> list[float]:
    """Adam on cross-entropy (+ penalty(model) after each forward; after_step(model) after each update, e.g. to
    re-apply pruning masks). Returns the mean loss per epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen)
        total = 0.0
        for start in range(0, len(X), batch_size):
            idx = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(X))
        if not math.isfinite(losses[-1]):
            break
        if bar is not None:
            bar.update()
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(X).argmax(1) == y).float().mean())


def replace_entries(X: torch.Tensor, fraction: float, value: float, seed: int) -> torch.Tensor:
    """Replace round(fraction * n_features) random entries of every example by ``value``."""
    flat = X.reshape(len(X), -1).clone()
    k = int(round(fraction * flat.shape[1]))
    if k:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.rand(flat.shape, generator=gen).argsort(dim=1)[:, :k]
        flat.scatter_(1, idx, value)
    return flat.reshape(X.shape)


@torch.no_grad()
def noise_robustness(model: nn.Module, X: torch.Tensor, y: torch.Tensor, value: float,
                     levels=NOISE_LEVELS, seed: int = 0) -> dict:
    """Accuracy at each noise level and the score: correct answers summed over levels (max len(levels) * n)."""
    accs = [accuracy(model, replace_entries(X, p, value, seed + i), y) for i, p in enumerate(levels)]
    correct = [int(round(a * len(X))) for a in accs]
    return {"levels": list(levels), "accuracy": accs, "score": int(sum(correct)), "max_score": len(levels) * len(X),
            "normalized_score": float(sum(correct)) / (len(levels) * len(X))}


def noise_value(X_train: torch.Tensor) -> float:
    """mean + 2 SD of the training inputs: the replacement value of Ahmad & Scheinkman's noise test."""
    return float(X_train.mean() + 2 * X_train.std())


def active_fraction(responses: list[torch.Tensor], tol: float = 1e-6) -> float:
    return float(np.mean([float((r.abs() > tol).float().mean()) for r in responses]))


def noise_curve_figure(res: dict, labels: dict, title: str):
    """Accuracy vs noise level for each model of a study (res[name] has noise_levels, noise_accuracy, noise_score)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, r) in enumerate(res.items()):
        ax.plot(r["noise_levels"], 100 * np.array(r["noise_accuracy"]), "o-", color=f"C{i}",
                label=f"{labels.get(name, name)}: score {r['noise_score']}")
    ax.set_xlabel("fraction of input entries replaced by mean + 2 SD")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
