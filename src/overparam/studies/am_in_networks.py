"""The associative-memory lens on trained MLPs: per-layer load, per-neuron noise gain, width and robustness.

The essay "Towards demystifying over-parameterization" (issue 7) reads every neuron as a linear associative
memory over its layer's input (valid when that input has constant length) and predicts that layers used
under capacity error-correct: input noise is attenuated in the output. Here MLPs in-h-h-out of several widths
are trained on MNIST-1D or digits, with and without constant-length normalization of every layer's input
(x -> sqrt(d) x / |x|). For every layer we measure on the training set:
- the effective dimension of its (normalized) inputs: participation ratio (sum l)^2 / sum l^2 of their
  covariance spectrum, and the load gamma = n_train / effective dimension;
- each neuron's AM noise gain G = |w|^2 E|h|^2 / (d Var(w.h)): its output noise-to-signal ratio over the
  input's under isotropic input noise (for unit-length inputs and unit-variance outputs, |w|^2 / d as in
  overparam.memory.theory);
and for every network its test error and noise score (Ahmad & Scheinkman 2019: a fraction 0..0.5 of input
entries replaced by mean + 2 SD, correct answers summed over 11 levels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from threadpoolctl import threadpool_limits
from torch import nn

from overparam.config import ConfigError, param
from overparam.models import seeded
from overparam.studies.am_common import NetworkDataConfig
from overparam.studies.am_common import NOISE_SOURCE, accuracy, fit, load_capped, noise_robustness, noise_value
from overparam.studies.base import Check, MAX_EXAMPLES, RunContext, Study, StudyResult, fmt, register

ESSAY = "essay 'Towards demystifying over-parameterization' (issue 7): under-capacity layers error-correct"
AHMAD = NOISE_SOURCE


class LengthNormalize(nn.Module):
    """x -> sqrt(d) x / |x|: every input vector gets the same length (entries stay O(1))."""

    def forward(self, x):
        return x * (x.shape[-1] ** 0.5) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class LensMLP(nn.Module):
    """in-h-...-out ReLU MLP whose Linear layers are exposed in order; optional length normalization of the
    input of every Linear layer. Same parameters with or without normalization."""

    def __init__(self, in_dim: int, widths: list[int], out_dim: int, normalize: bool):
        super().__init__()
        sizes = [in_dim, *widths, out_dim]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norm = LengthNormalize() if normalize else nn.Identity()

    def layer_inputs(self, x) -> list[torch.Tensor]:
        """The input each Linear layer sees (after normalization, if any)."""
        inputs = []
        for i, lin in enumerate(self.linears):
            x = self.norm(x)
            inputs.append(x)
            x = lin(x)
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        return inputs

    def forward(self, x):
        for i, lin in enumerate(self.linears):
            x = lin(self.norm(x))
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        return x


def participation_ratio(H: np.ndarray) -> float:
    """(sum l)^2 / sum l^2 of the eigenvalues l of the covariance of the rows of H (centered: the neuron's bias
    absorbs the mean, which would otherwise dominate the spectrum)."""
    s2 = np.linalg.svd(H - H.mean(axis=0), compute_uv=False) ** 2
    return float(s2.sum() ** 2 / max(np.sum(s2 ** 2), 1e-300))


def neuron_noise_gains(W: np.ndarray, b: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Per-neuron G = |w|^2 E|h|^2 / (d Var(w.h + b)) over the rows of H (n x d)."""
    out = H @ W.T + b
    var = out.var(axis=0)
    d = H.shape[1]
    return (np.sum(W ** 2, axis=1) * np.mean(np.sum(H ** 2, axis=1))) / (d * np.maximum(var, 1e-12))


@dataclass
class AmInNetworksConfig(NetworkDataConfig):
    widths: list[int] = param([8, 16, 32, 64, 128, 256], "hidden widths h of the in-h-h-out MLPs", min=2, max=4096)
    epochs: int = param(40, "training epochs (Adam)", min=1, max=10000)
    lr: float = param(1e-3, "Adam learning rate", min=1e-6, max=1.0)
    batch_size: int = param(100, "minibatch size", min=1, max=MAX_EXAMPLES)

    def validate(self) -> None:
        if sorted(self.widths) != list(self.widths) or len(set(self.widths)) != len(self.widths):
            raise ConfigError("widths: must be strictly increasing, e.g. 8,32,128")
        if len(self.widths) < 3:
            raise ConfigError("widths: need at least 3 widths to see a trend")


PRESETS = {
    "quick": {"dataset": "digits", "widths": [8, 16, 32, 64, 128, 256], "epochs": 40},
    "paper": {"dataset": "mnist1d", "n_train": 4000, "n_test": 1000, "widths": [8, 16, 32, 64, 128, 256, 512],
              "epochs": 100},
}


@torch.no_grad()
def _lens(model: LensMLP, X: torch.Tensor) -> list[dict]:
    rows = []
    for lin, H in zip(model.linears, model.layer_inputs(X)):
        H = H.double().numpy()
        pr = participation_ratio(H)
        g = neuron_noise_gains(lin.weight.double().numpy(), lin.bias.double().numpy(), H)
        rows.append({"d": H.shape[1], "effective_dim": pr, "load": len(H) / pr, "median_gain": float(np.median(g)),
                     "mean_log10_gain": float(np.mean(np.log10(g)))})
    return rows


def run(cfg: AmInNetworksConfig, ctx: RunContext) -> StudyResult:
    data = load_capped(cfg.dataset, cfg.seed, cfg.n_train, cfg.n_test)
    X, y, Xt, yt = data.X_train.float(), data.y_train, data.X_test.float(), data.y_test
    n_in, n_out = X.shape[1], data.n_classes
    value = noise_value(X)
    res = {}
    with threadpool_limits(limits=1), ctx.progress.bar(2 * len(cfg.widths) * cfg.epochs, "am-in-networks") as bar:
        for variant, normalize in (("plain", False), ("normalized", True)):
            rows = []
            for i, h in enumerate(cfg.widths):
                model = seeded(lambda: LensMLP(n_in, [h, h], n_out, normalize), seed=cfg.seed * 1000 + 3 * i + 1)
                fit(model, X, y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed + i, bar=bar)
                noise = noise_robustness(model, Xt, yt, value, seed=cfg.seed)
                rows.append({"width": h, "test_error": 1 - accuracy(model, Xt, yt),
                             "train_error": 1 - accuracy(model, X, y), "noise_score": noise["score"],
                             "noise_max_score": noise["max_score"], "noise_accuracy": noise["accuracy"],
                             "layers": _lens(model, X)})
            res[variant] = rows
    return _summarize(cfg, res, len(X))


def _hidden_gain(row) -> float:
    """Mean log10 gain of the layers whose input is a hidden layer (the AMs whose dimension is the width)."""
    return float(np.mean([layer["mean_log10_gain"] for layer in row["layers"][1:]]))


def _summarize(cfg, res, n_train) -> StudyResult:
    widths = np.array(cfg.widths)
    checks = []
    metrics = {"n_train": n_train, "widths": widths.tolist()}
    arrays = {"widths": widths}
    for variant, rows in res.items():
        gains = np.array([_hidden_gain(r) for r in rows])
        scores = np.array([r["noise_score"] for r in rows])
        err = np.array([r["test_error"] for r in rows])
        eff = np.array([[layer["effective_dim"] for layer in r["layers"]] for r in rows])
        load = np.array([[layer["load"] for layer in r["layers"]] for r in rows])
        rho_gw = float(stats.spearmanr(widths, gains).statistic)
        rho_gs = float(stats.spearmanr(gains, scores).statistic)
        checks.append(Check(f"{variant}: wider hidden layers attenuate input noise more",
                            "Spearman correlation of width with the hidden layers' mean log10 AM noise gain < -0.5",
                            f"rho = {fmt(rho_gw)}; gain 10^{gains[0]:.2f} (h={widths[0]}) -> 10^{gains[-1]:.2f} "
                            f"(h={widths[-1]})", rho_gw < -0.5, ESSAY))
        checks.append(Check(f"{variant}: noise robustness grows with width",
                            "noise score of the widest net > the narrowest's",
                            f"{scores[-1]} vs {scores[0]} of {rows[0]['noise_max_score']}",
                            bool(scores[-1] > scores[0]), ESSAY + "; " + AHMAD))
        checks.append(Check(f"{variant}: the AM noise gain predicts robustness",
                            "Spearman correlation of mean log10 hidden gain with noise score < -0.5",
                            f"rho = {fmt(rho_gs)}", rho_gs < -0.5, ESSAY))
        metrics[variant] = {"test_error": err.tolist(), "noise_score": scores.tolist(),
                            "hidden_log10_gain": gains.tolist(), "effective_dim": eff.tolist(),
                            "load": load.tolist(), "rho_width_gain": rho_gw, "rho_gain_score": rho_gs}
        arrays[f"{variant}_test_error"] = err
        arrays[f"{variant}_noise_score"] = scores
        arrays[f"{variant}_hidden_log10_gain"] = gains
        arrays[f"{variant}_effective_dim"] = eff
        arrays[f"{variant}_load"] = load
    p, q = res["plain"], res["normalized"]
    checks.append(Check("constant-length normalization keeps accuracy",
                        "best test error of normalized nets within 3 points of plain nets'",
                        f"{100 * min(r['test_error'] for r in q):.1f}% vs {100 * min(r['test_error'] for r in p):.1f}%",
                        min(r["test_error"] for r in q) <= min(r["test_error"] for r in p) + 0.03, ESSAY))
    notes = (f"Hidden-layer AM noise gain falls from 10^{metrics['plain']['hidden_log10_gain'][0]:.2f} to "
             f"10^{metrics['plain']['hidden_log10_gain'][-1]:.2f} as the width grows {widths[0]} -> {widths[-1]} "
             f"(plain); noise score {metrics['plain']['noise_score'][0]} -> {metrics['plain']['noise_score'][-1]} "
             f"(plain), {metrics['normalized']['noise_score'][0]} -> {metrics['normalized']['noise_score'][-1]} "
             f"(normalized). Every layer is far over capacity in patterns (load n/effective dim "
             f"{fmt(float(np.min(arrays['plain_load'])))} .. {fmt(float(np.max(arrays['plain_load'])))}).")
    return StudyResult(metrics, checks, arrays, {"am_in_networks": _figure(cfg, res, widths)}, notes=notes)


def _figure(cfg, res, widths):
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.3))
    for k, (variant, rows) in enumerate(res.items()):
        ls = "-" if variant == "plain" else "--"
        n_layers = len(rows[0]["layers"])
        for li in range(n_layers):
            a1.plot(widths, [10 ** r["layers"][li]["mean_log10_gain"] for r in rows], "o" + ls, color=f"C{li}",
                    label=f"layer {li + 1} ({variant})")
            a2.plot(widths, [r["layers"][li]["effective_dim"] for r in rows], "o" + ls, color=f"C{li}",
                    label=f"layer {li + 1} ({variant})")
        a3.plot(widths, [r["noise_score"] / r["noise_max_score"] for r in rows], "o" + ls, color="C3",
                label=f"noise score / max ({variant})")
        a3.plot(widths, [1 - r["test_error"] for r in rows], "s" + ls, color="C0", label=f"clean accuracy ({variant})")
    a1.axhline(1.0, color="gray", ls=":", lw=1)
    a1.set_yscale("log")
    a1.set_ylabel("AM noise gain (geometric mean over neurons)")
    a1.set_title("Per-neuron input-noise gain (< 1: error correction)")
    a2.set_ylabel("effective dimension of the layer's inputs")
    a2.set_title("Participation ratio of layer inputs")
    a3.set_ylabel("fraction")
    a3.set_title(f"Accuracy and noise robustness ({cfg.dataset})")
    for ax in (a1, a2, a3):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width h")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="am-in-networks",
    description="Trained MLPs through the associative-memory lens: per-layer load, neuron noise gain, robustness.",
    paper="essay 'Towards demystifying over-parameterization' (issue 7); Ahmad & Scheinkman 2019 (noise score)",
    config=AmInNetworksConfig, presets=PRESETS, run=run))
