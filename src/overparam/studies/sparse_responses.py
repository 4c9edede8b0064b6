"""Sparse responses: k-winners-take-all and a {0, +-1} response regularizer vs a dense MLP of equal size.

The essay "Towards demystifying over-parameterization" (issue 7) proposes training neurons whose outputs are
mostly 0 and sometimes +-1 (good signalling, high signal-to-noise). Ahmad & Scheinkman 2019 ("How can we be
so dense?") made activations sparse with k-winners-take-all plus boosting and found much higher noise
robustness at a small cost in clean accuracy (MNIST: dense CNN-1 99.14% / noise score 74,569; sparse CNN-1
98.41% / 100,306, out of 110,000). Here: MLPs on MNIST-1D or digits, three models with the same parameter
count -- dense ReLU, k-WTA (ReLU replaced by k-WTA), ternary units (responses in {0, +-1}, trained
straight-through) with an l1 penalty on pre-activations so that most responses are 0 -- and, as in the paper's
Table 1, twice-wider nets with fixed random sparse weights (same number of nonzero parameters) with k-WTA or
with dense ReLU activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from overparam.config import param
from overparam.models import MLP, seeded
from overparam.memory.nets import (KWinnersMLP, SparseResponseMLP, mask_applier, nonzero_parameters,
                                   random_weight_masks, sparsity_penalty)
from overparam.studies.am_common import NetworkDataConfig
from overparam.studies.am_common import (accuracy, active_fraction, fit, load_capped, noise_curve_figure,
                                         noise_robustness, noise_value)
from overparam.studies.base import Check, MAX_EXAMPLES, RunContext, Study, StudyResult, fmt, register

AHMAD = "Ahmad & Scheinkman 2019, Table 1 (dense CNN-1 74,569 vs sparse CNN-1 100,306 of 110,000)"
ESSAY = "essay 'Towards demystifying over-parameterization' (issue 7)"
MODELS = ("dense", "kwta", "ternary", "kwta_sparse_weights", "sparse_weights")
LABELS = {"dense": "dense ReLU", "kwta": "k-WTA", "ternary": "ternary {0, ±1} + l1",
          "kwta_sparse_weights": "k-WTA + sparse weights (2h)", "sparse_weights": "ReLU + sparse weights (2h)"}


@dataclass
class SparseResponsesConfig(NetworkDataConfig):
    width: int = param(256, "hidden width of the in-h-h-out MLPs", min=8, max=4096)
    depth: int = param(2, "hidden layers", min=1, max=4)
    density: float = param(0.1, "k-WTA: fraction k/h of winners per layer", min=0.01, max=1.0)
    boost_strength: float = param(1.5, "k-WTA boosting exp((k/h - duty) * strength)", min=0.0, max=100.0)
    l1: float = param(0.3, "ternary model: weight of mean |pre-activation| (pushes responses to 0)", min=0.0,
                      max=10.0)
    threshold: float = param(0.5, "ternary model: |pre-activation| above which a unit answers +-1", min=0.0,
                             max=10.0)
    epochs: int = param(30, "training epochs (Adam)", min=1, max=10000)
    lr: float = param(1e-3, "Adam learning rate", min=1e-6, max=1.0)
    batch_size: int = param(100, "minibatch size", min=1, max=MAX_EXAMPLES)


PRESETS = {
    # digits (8x8 images, 1257 train / 540 test), ~10 s
    "quick": {"dataset": "digits", "epochs": 40},
    # Ahmad & Scheinkman's MNIST MLP-sized setup transposed to MNIST-1D: more data, longer training.
    "paper": {"n_train": 8000, "n_test": 2000, "width": 500, "density": 0.1, "epochs": 100},
}


def sparse_weight_density(n_in: int, width: int, depth: int, n_out: int, factor: int = 2) -> float:
    """Weight density of the hidden matrices of an in-(factor h)-...-out net with as many nonzero parameters
    as the dense in-h-...-out net (biases and read-out stay dense)."""
    h2 = factor * width
    dense = sum(a * b + b for a, b in zip([n_in] + [width] * depth, [width] * depth + [n_out]))
    fixed = depth * h2 + h2 * n_out + n_out
    masked = n_in * h2 + (depth - 1) * h2 * h2
    return (dense - fixed) / masked


def _build(cfg, name, n_in, n_out):
    widths = [cfg.width] * cfg.depth
    if name == "dense":
        return MLP(n_in, widths, n_out)
    if name == "kwta":
        return KWinnersMLP(n_in, widths, n_out, cfg.density, cfg.boost_strength)
    if name == "kwta_sparse_weights":
        return KWinnersMLP(n_in, [2 * cfg.width] * cfg.depth, n_out, cfg.density, cfg.boost_strength)
    if name == "sparse_weights":
        return MLP(n_in, [2 * cfg.width] * cfg.depth, n_out)
    return SparseResponseMLP(n_in, widths, n_out, threshold=cfg.threshold)


def _hidden_responses(model, name, X):
    """Hidden-layer outputs (after the nonlinearity) via forward hooks on the activation modules."""
    if name == "ternary":
        with torch.no_grad():
            return model.responses(X)
    acts = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: acts.append(o.detach()))
             for m in model.modules() if not isinstance(m, torch.nn.Linear) and not list(m.children())]
    with torch.no_grad():
        model(X)
    for h in hooks:
        h.remove()
    return acts


def run(cfg: SparseResponsesConfig, ctx: RunContext) -> StudyResult:
    data = load_capped(cfg.dataset, cfg.seed, cfg.n_train, cfg.n_test)
    X, y, Xt, yt = data.X_train.float(), data.y_train, data.X_test.float(), data.y_test
    n_in, n_out = X.shape[1], data.n_classes
    value = noise_value(X)
    res = {}
    with threadpool_limits(limits=1), ctx.progress.bar(len(MODELS) * cfg.epochs, "sparse-responses") as bar:
        for i, name in enumerate(MODELS):
            model = seeded(lambda: _build(cfg, name, n_in, n_out), seed=cfg.seed * 1000 + 17)
            penalty = (lambda m: sparsity_penalty(m.preacts, cfg.l1)) if name == "ternary" else None
            apply = None
            if name.endswith("sparse_weights"):
                q = sparse_weight_density(n_in, cfg.width, cfg.depth, n_out)
                apply = mask_applier(random_weight_masks(model, q, seed=cfg.seed + 101))
                apply(model)
            losses = fit(model, X, y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed + i,
                         penalty=penalty, bar=bar, after_step=apply)
            resp = _hidden_responses(model, name, Xt)
            near_one = float(np.mean([float(((r.abs() > 0.8).float().sum() / max((r.abs() > 0.1).sum(), 1)))
                                      for r in resp]))
            res[name] = {"params": nonzero_parameters(model), "clean_accuracy": accuracy(model, Xt, yt),
                         "train_accuracy": accuracy(model, X, y), "final_loss": losses[-1],
                         "active_fraction": active_fraction(resp, tol=1e-6 if name != "ternary" else 0.1),
                         "near_pm1_fraction_of_active": near_one,
                         **{f"noise_{k}": v for k, v in noise_robustness(model, Xt, yt, value, seed=cfg.seed).items()}}
    return _summarize(cfg, res)


def _summarize(cfg, res) -> StudyResult:
    d, k, t = res["dense"], res["kwta"], res["ternary"]
    ks, sw = res["kwta_sparse_weights"], res["sparse_weights"]
    counts = [r["params"] for r in res.values()]
    checks = [
        Check("equal parameter counts", "nonzero parameters of every model within 1% of the dense one's",
              " / ".join(str(c) for c in counts),
              max(counts) <= 1.01 * d["params"] and min(counts) >= 0.99 * d["params"],
              "issue 7 (dense baseline of equal parameter count)"),
        Check("k-WTA keeps exactly k of h units", f"active fraction = {cfg.density:g} (+- 1/h)",
              fmt(k["active_fraction"], 4), abs(k["active_fraction"] - round(cfg.density * cfg.width) / cfg.width)
              <= 1.0 / cfg.width, AHMAD),
        Check("ternary responses are mostly 0, the rest +-1",
              "active fraction < 0.5, and every active response is exactly +-1",
              f"active {fmt(t['active_fraction'])}, +-1 among active {fmt(t['near_pm1_fraction_of_active'])}",
              t["active_fraction"] < 0.5 and t["near_pm1_fraction_of_active"] > 0.999, ESSAY),
        Check("k-WTA is more noise-robust than dense",
              "noise score (correct answers summed over 11 noise levels) of k-WTA > dense (paper: +35%)",
              f"{k['noise_score']} vs {d['noise_score']} of {d['noise_max_score']} "
              f"({100 * (k['noise_score'] / max(d['noise_score'], 1) - 1):+.1f}%)",
              k["noise_score"] > d["noise_score"], AHMAD),
        Check("k-WTA + sparse weights is more noise-robust than dense",
              "noise score of the paper's full sparse net (wider, same nonzeros) > dense (paper: +35%)",
              f"{ks['noise_score']} vs {d['noise_score']} "
              f"({100 * (ks['noise_score'] / max(d['noise_score'], 1) - 1):+.1f}%)",
              ks["noise_score"] > d["noise_score"], AHMAD),
        Check("sparse activations matter, not only sparse weights",
              "noise score of k-WTA + sparse weights > sparse weights with dense activations "
              "(paper: 100,306 vs 70,566)",
              f"{ks['noise_score']} vs {sw['noise_score']}", ks["noise_score"] > sw["noise_score"], AHMAD),
        Check("the ternary responses are more noise-robust than dense", "noise score of ternary > dense",
              f"{t['noise_score']} vs {d['noise_score']}", t["noise_score"] > d["noise_score"], ESSAY),
        Check("sparsity costs little clean accuracy", "k-WTA clean accuracy within 3 points of dense "
              "(paper: 98.41% vs 99.14%)", f"{100 * k['clean_accuracy']:.1f}% vs {100 * d['clean_accuracy']:.1f}%",
              k["clean_accuracy"] >= d["clean_accuracy"] - 0.03, AHMAD),
    ]
    metrics = {name: {key: v for key, v in r.items() if key != "noise_levels"} for name, r in res.items()}
    arrays = {"noise_levels": np.array(res["dense"]["noise_levels"])}
    for name, r in res.items():
        arrays[f"{name}_noise_accuracy"] = np.array(r["noise_accuracy"])
    notes = (f"Noise score (max {d['noise_max_score']}) and clean accuracy: " + "; ".join(
        f"{LABELS[n]} {r['noise_score']}, {100 * r['clean_accuracy']:.1f}%" for n, r in res.items()) + ".")
    return StudyResult(metrics, checks, arrays, {"sparse_responses": _figure(cfg, res)}, notes=notes)


def _figure(cfg, res):
    return noise_curve_figure(res, LABELS, f"Noise robustness, {cfg.dataset}, MLP {cfg.depth}x{cfg.width} "
                                           "(equal nonzero parameters)")


STUDY = register(Study(
    name="sparse-responses",
    description="k-WTA and a {0, +-1} response penalty vs a dense MLP of equal size: noise score and sparsity.",
    paper="Ahmad & Scheinkman 2019 ('How can we be so dense?'); essay 'Towards demystifying over-parameterization'",
    config=SparseResponsesConfig, presets=PRESETS, run=run))
