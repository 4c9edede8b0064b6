"""Bayesian rank selection for tensor-train networks, and what the posterior buys in uncertainty.

Hawkins & Zhang 2019 ("Bayesian tensorized neural networks with automatic rank selection", arXiv 1905.10478)
put a prior on the TT cores with one variance per rank slice; training shrinks the slices the data does not
need, and cutting them out gives 7.4x-137x smaller models than the dense nets at similar accuracy, with
predictive uncertainty as a by-product.

Here: an MLP whose layers are all TT-matrix layers (in -> hidden TT layer(s) -> TT head), trained three ways on
the same data for the same number of Adam steps:

1. the dense MLP of the same widths (cross-entropy);
2. the deterministic TT net at the max rank (:class:`overparam.models.tt.TTLinear`, cross-entropy);
3. the Bayesian TT net at the max rank (:class:`overparam.models.bayes_tt.BayesianTTLinear`), mean-field
   variational inference on the ELBO with the KL weight ramped up over the first ``kl_warmup`` of the steps
   (Hawkins-Liu-Zhang's code switches the KL off for 5 epochs, then ramps it).

The Bayesian net's rank slices whose prior variance fell below ``threshold`` x the largest of their rank are cut
out; the learned ranks give the compression (vs the dense net and vs the max-rank TT). The three nets are compared
on test accuracy, negative log-likelihood, expected calibration error (reliability diagram), and the AUROC of
predictive entropy for telling test inputs from out-of-distribution inputs (Gaussian noise with the training
statistics, and the test images with a fixed pixel shuffle). The Bayesian net predicts by the Monte-Carlo mean
of ``mc_samples`` posterior samples.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import corrupt, load_dataset
from overparam.measure.calibration import (accuracy, nll, ood_auroc, predictive_entropy, reliability_curve)
from overparam.models import MLP, count_parameters
from overparam.models.bayes_tt import (BayesianTTLinear, bayes_layers, elbo_estimate, elbo_loss, mc_predict,
                                       model_kl, set_sampling, update_lambdas_)
from overparam.models.tt import TTLinear, factorize
from overparam.studies.base import (Check, DATASET_SHAPES, FLOAT32, MAX_EXAMPLES, MAX_STEPS, RunContext, Study,
                                    StudyResult, check_data_keys, data_bytes, fmt, register)
from overparam.train import Diverged

HAWKINS = "Hawkins & Zhang 2019 (arXiv 1905.10478), Sec. 5, Tables 1-3"
OOD_KINDS = ("gaussian", "shuffled_pixels")
SWEEP_THRESHOLDS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)   # pruning thresholds reported besides cfg.threshold


@dataclass
class TTRankSelectionConfig(StudyConfig):
    dataset: str = param("mnist1d", "training data", choices=("digits", "mnist1d", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    n_train: int | None = param(None, "training examples (none: the dataset's default)", min=20, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=20, max=MAX_EXAMPLES)
    in_modes: list[int] = param([2, 4, 5], "factorization of the input dimension (product = input dim)", min=1,
                                max=4096)
    hidden_modes: list[int] = param([4, 8, 8], "factorization of the hidden width (same length as in_modes)",
                                    min=1, max=4096)
    depth: int = param(1, "hidden TT layers (the TT head comes on top)", min=1, max=4)
    head_modes: list[int] = param([5, 2], "factorization of the number of classes for the TT head", min=1, max=4096)
    max_rank: int = param(16, "initial (maximal) TT rank of every layer", min=1, max=256)
    steps: int = param(1500, "Adam steps for each of the three nets", min=1, max=MAX_STEPS)
    batch_size: int = param(128, "minibatch size", min=1, max=MAX_EXAMPLES)
    lr: float = param(0.01, "Adam learning rate", min=1e-6, max=1.0)
    kl_warmup: float = param(0.1, "fraction of the steps over which the KL weight ramps from 0 to 1",
                             min=0.0, max=1.0)
    hyperprior: str = param("log-uniform", "hyper-prior on the rank-slice variances lambda",
                            choices=("log-uniform", "gamma", "none"))
    hyper_a: float = param(1.0, "Gamma shape a (hyperprior=gamma)", min=1e-6, max=1e6)
    hyper_b: float = param(1.0, "Gamma rate b (hyperprior=gamma)", min=1e-6, max=1e6)
    lambda_update: str = param("closed-form", "how the rank-slice variances are fitted: exact coordinate ascent "
                               "after every step, or Adam like the other parameters",
                               choices=("closed-form", "gradient"))
    init_sigma: float = param(0.01, "initial posterior std as a fraction of the prior std", min=1e-6, max=1.0)
    threshold: float = param(0.1, "a rank slice is cut when its lambda < threshold x the largest of its rank",
                             min=0.0, max=1.0)
    mc_samples: int = param(50, "posterior samples averaged for the Bayesian predictions", min=1, max=100_000)
    n_bins: int = param(10, "confidence bins of the ECE and the reliability diagram", min=2, max=100)
    acc_tol: float = param(0.02, "accuracy loss (absolute) that still counts as 'similar accuracy'",
                           min=0.0, max=1.0)
    ece_tol: float = param(0.01, "ECE excess over the deterministic TT still counted as 'no worse' "
                           "(about the sampling noise of ECE on a few hundred test examples)", min=0.0, max=1.0)

    def validate(self) -> None:
        if len(self.in_modes) != len(self.hidden_modes):
            raise ConfigError("hidden_modes: must have as many modes as in_modes "
                              f"({len(self.in_modes)}), got {self.hidden_modes}")
        if len(self.in_modes) < 2:
            raise ConfigError("in_modes: need at least 2 modes (a TT layer with one core has no rank)")
        if len(self.head_modes) < 2:
            raise ConfigError("head_modes: need at least 2 modes, e.g. 5,2 for 10 classes")
        check_data_keys(self.dataset, self.data_dir, self.n_train, n_test=self.n_test)

    def peak_bytes(self) -> dict[str, float]:
        """The data and the activations of the widest TT layer for a batch and for the test set."""
        hidden = math.prod(self.hidden_modes)
        n_test = self.n_test or DATASET_SHAPES[self.dataset][3]
        return {**data_bytes(self.dataset, self.n_train, self.n_test),
                "hidden_modes": FLOAT32 * 3 * (self.depth + 1) * hidden * (self.batch_size + n_test)}


PRESETS = {
    # MNIST-1D (4000 train / 1000 test), 40 -> 256 -> 10 with both layers in TT form at max rank 16.
    "quick": {"dataset": "mnist1d", "in_modes": [2, 4, 5], "steps": 1500, "max_rank": 16, "mc_samples": 50},
    # MNIST-1D (4000 / 1000), two hidden TT layers, the paper's initial max rank 20 and a long budget.
    # Hawkins & Zhang's own FC setup is MNIST 784-625-10: --set dataset=mnist data_dir=DIR
    # in_modes=4,7,4,7 hidden_modes=5,5,5,5 depth=1.
    "paper": {"dataset": "mnist1d", "in_modes": [2, 4, 5], "hidden_modes": [4, 8, 8], "depth": 2,
              "max_rank": 20, "steps": 20000, "batch_size": 100, "lr": 0.003, "kl_warmup": 0.05, "mc_samples": 100,
              "n_bins": 15},
}


# --------------------------------------------------------------------------- networks
def layer_modes(cfg, n_in: int, n_classes: int) -> list[tuple[list[int], list[int]]]:
    if math.prod(cfg.in_modes) != n_in:
        raise ConfigError(f"in_modes: the product of {cfg.in_modes} is {math.prod(cfg.in_modes)}, "
                          f"but {cfg.dataset} has {n_in} input features")
    if math.prod(cfg.head_modes) != n_classes:
        raise ConfigError(f"head_modes: the product of {cfg.head_modes} must be the {n_classes} classes")
    hidden = list(cfg.hidden_modes)
    modes = [(list(cfg.in_modes), hidden)] + [(hidden, hidden)] * (cfg.depth - 1)
    modes.append((factorize(math.prod(hidden), len(cfg.head_modes)), list(cfg.head_modes)))
    return modes


def tt_net(modes, rank: int, bayes: bool, cfg=None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(modes):
        if bayes:
            layers.append(BayesianTTLinear(a, b, rank, hyperprior=cfg.hyperprior, hyper_a=cfg.hyper_a,
                                           hyper_b=cfg.hyper_b, init_sigma=cfg.init_sigma))
        else:
            layers.append(TTLinear(a, b, rank, init="he"))
        if i < len(modes) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(nn.Flatten(), *layers)


def tt_parameter_count(modes, ranks_per_layer) -> int:
    """Deployed parameters (cores + biases) of TT layers with the given full rank lists."""
    total = 0
    for (a, b), r in zip(modes, ranks_per_layer):
        total += sum(r[k] * m * n * r[k + 1] for k, (m, n) in enumerate(zip(a, b))) + math.prod(b)
    return total


# --------------------------------------------------------------------------- training
def fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch_size: int, seed: int,
        loss_fn, progress=None, desc: str = "train", record=None, record_every: int = 0, params=None,
        after_step=None) -> list:
    """Adam on minibatches drawn from a seeded permutation; ``loss_fn(model, logits, y, step)``.
    ``record(step)`` is called every ``record_every`` steps (and at 0 and the end) and its values returned;
    ``after_step(model)`` after every optimizer step; ``params``: what Adam updates (default: all)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters() if params is None else params, lr=lr)
    n = len(X)
    batch_size = min(batch_size, n)
    perm, pos = torch.randperm(n, generator=gen), 0
    records = []
    if record is not None:
        records.append(record(0))
    with progress.bar(steps, desc) if progress is not None else nullcontext() as bar:
        for step in range(1, steps + 1):
            if pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            loss = loss_fn(model, model(X[idx]), y[idx], step)
            if not torch.isfinite(loss):
                raise Diverged(f"{desc}: loss became {float(loss)} at step {step} (lr={lr}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            if bar is not None:
                bar.update(1)
            if record is not None and record_every and (step % record_every == 0 or step == steps):
                records.append(record(step))
    return records


@torch.no_grad()
def det_predict(model: nn.Module, X: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.softmax(model(X), 1).double().numpy()


def uncertainty_metrics(probs_in: np.ndarray, y: np.ndarray, probs_ood: dict[str, np.ndarray], n_bins: int) -> dict:
    curve = reliability_curve(probs_in, y, n_bins)
    ent_in = predictive_entropy(probs_in)
    out = {"accuracy": accuracy(probs_in, y), "nll": nll(probs_in, y), "ece": curve.ece,
           "reliability": curve.to_dict(), "mean_entropy_in": float(ent_in.mean())}
    for kind, p in probs_ood.items():
        ent = predictive_entropy(p)
        out[f"auroc_{kind}"] = ood_auroc(ent_in, ent)
        out[f"mean_entropy_{kind}"] = float(ent.mean())
    out["auroc_mean"] = float(np.mean([out[f"auroc_{k}"] for k in probs_ood])) if probs_ood else float("nan")
    return out


# --------------------------------------------------------------------------- the study
def run(cfg: TTRankSelectionConfig, ctx: RunContext) -> StudyResult:
    torch.set_num_threads(1)
    ds = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                      data_dir=(cfg.data_dir or ctx.data_dir) if cfg.dataset == "mnist" else None)
    n_in, n_classes = ds.input_dim, ds.n_classes
    modes = layer_modes(cfg, n_in, n_classes)
    X, y = ds.X_train.float().flatten(1), ds.y_train
    Xt, yt = ds.X_test.float().flatten(1), ds.y_test
    ood = {kind: corrupt(ds, kind, seed=cfg.seed + 1, apply_to="test").X_test.float().flatten(1)
           for kind in OOD_KINDS}
    n = len(X)
    ce = lambda model, logits, yb, step: nn.functional.cross_entropy(logits, yb)  # noqa: E731
    results: dict = {}
    probs: dict = {}

    with torch.random.fork_rng(devices=[]):
        # 1. dense MLP of the same widths
        torch.manual_seed(cfg.seed)
        widths = [math.prod(cfg.hidden_modes)] * cfg.depth
        dense = MLP(n_in, widths, n_classes)
        fit(dense, X, y, cfg.steps, cfg.lr, cfg.batch_size, cfg.seed, ce, ctx.progress, "dense MLP")
        probs["dense"] = {k: det_predict(dense, v) for k, v in {"in": Xt, **ood}.items()}
        results["dense"] = {"params": count_parameters(dense)}

        # 2. deterministic TT at the max rank
        torch.manual_seed(cfg.seed + 1)
        det = tt_net(modes, cfg.max_rank, bayes=False)
        fit(det, X, y, cfg.steps, cfg.lr, cfg.batch_size, cfg.seed, ce, ctx.progress, "TT (max rank)")
        probs["tt"] = {k: det_predict(det, v) for k, v in {"in": Xt, **ood}.items()}
        max_ranks = [layer.ranks for layer in det if isinstance(layer, TTLinear)]
        results["tt"] = {"params": count_parameters(det), "ranks": max_ranks}

        # 3. Bayesian TT at the max rank, variational inference
        torch.manual_seed(cfg.seed + 2)
        bnet = tt_net(modes, cfg.max_rank, bayes=True, cfg=cfg)
        warm = max(1, int(round(cfg.kl_warmup * cfg.steps)))

        def elbo_fn(model, logits, yb, step):
            return elbo_loss(model, logits, yb, n, kl_weight=min(1.0, step / warm) if cfg.kl_warmup > 0 else 1.0)

        elbo_sub = X[:512]
        record_every = max(1, cfg.steps // 15)
        history = fit(bnet, X, y, cfg.steps, cfg.lr, cfg.batch_size, cfg.seed, elbo_fn, ctx.progress,
                      "Bayesian TT (VI)",
                      record=lambda step: (step, elbo_per_example(bnet, elbo_sub, y[:512], n)),
                      record_every=record_every,
                      params=[p for name, p in bnet.named_parameters()
                              if cfg.lambda_update == "gradient" or "log_lambdas" not in name],
                      after_step=update_lambdas_ if cfg.lambda_update == "closed-form" else None)
        layers = list(bayes_layers(bnet))
        learned = [layer.effective_ranks(cfg.threshold) for layer in layers]
        lambdas = [[lam.detach().double().numpy() for lam in layer.lambdas()[1:-1]] for layer in layers]
        pruned = nn.Sequential(*[m.pruned(cfg.threshold) if isinstance(m, BayesianTTLinear) else m for m in bnet])
        probs["bayes_full"] = {k: mc_predict(bnet, v, cfg.mc_samples).double().numpy()
                               for k, v in {"in": Xt, **ood}.items()}
        probs["bayes"] = {k: mc_predict(pruned, v, cfg.mc_samples).double().numpy()
                          for k, v in {"in": Xt, **ood}.items()}
        sweep = []
        for thr in SWEEP_THRESHOLDS:
            cut = nn.Sequential(*[m.pruned(thr) if isinstance(m, BayesianTTLinear) else m for m in bnet])
            p_cut = mc_predict(cut, Xt, cfg.mc_samples).double().numpy()
            ranks_cut = [layer.ranks for layer in bayes_layers(cut)]
            sweep.append({"threshold": thr, "ranks": ranks_cut, "params": tt_parameter_count(modes, ranks_cut),
                          "accuracy": accuracy(p_cut, yt.numpy()), "nll": nll(p_cut, yt.numpy())})
        # Posterior-mean predictions (no Monte-Carlo noise): the paired test of what the cut slices carried.
        set_sampling(pruned, False)
        set_sampling(bnet, False)
        with torch.no_grad():
            mean_acc = float((pruned(Xt).argmax(1) == yt).double().mean())
            mean_acc_full = float((bnet(Xt).argmax(1) == yt).double().mean())
        set_sampling(pruned, True)
        set_sampling(bnet, True)

    yt_np = yt.numpy()
    for key in ("dense", "tt", "bayes_full", "bayes"):
        results.setdefault(key, {}).update(uncertainty_metrics(
            probs[key]["in"], yt_np, {k: probs[key][k] for k in OOD_KINDS}, cfg.n_bins))
    results["bayes"]["ranks"] = learned
    results["bayes"]["params"] = tt_parameter_count(modes, learned)
    results["bayes"]["posterior_mean_accuracy"] = mean_acc
    results["bayes_full"]["posterior_mean_accuracy"] = mean_acc_full
    results["bayes_full"]["params"] = tt_parameter_count(modes, [layer.ranks for layer in layers])
    summary = _summarize(cfg, results, history)
    summary.metrics["threshold_sweep"] = sweep
    summary.arrays.update({f"lambda_layer{i}_rank{k + 1}": lam for i, lams in enumerate(lambdas)
                           for k, lam in enumerate(lams)})
    summary.figures = {"reliability": _reliability_figure(cfg, results),
                       "ranks": _ranks_figure(cfg, lambdas, learned, max_ranks, history, sweep, results),
                       "ood_entropy": _entropy_figure(probs)}
    return summary


@torch.no_grad()
def elbo_per_example(model, X, y, n_train: int, samples: int = 2) -> float:
    """The full-data ELBO / n_train, estimated on (X, y): mean log-likelihood under ``samples`` posterior draws
    minus KL(q || p) / n_train."""
    kl = float(model_kl(model))
    return (elbo_estimate(model, X, y, samples=samples) + kl) / len(X) - kl / n_train


def _summarize(cfg, results: dict, history: list) -> StudyResult:
    """results: {dense, tt, bayes_full, bayes} -> metrics dicts (accuracy, nll, ece, auroc_*, params, ranks)."""
    d, t, b, bf = results["dense"], results["tt"], results["bayes"], results["bayes_full"]
    ratio_dense = d["params"] / b["params"]
    ratio_tt = t["params"] / b["params"]
    elbo = np.array([e for _, e in history]) if history else np.array([np.nan])
    ranks_text = "; ".join("x".join(str(r) for r in ranks[1:-1]) for ranks in b["ranks"])
    max_text = "; ".join("x".join(str(r) for r in ranks[1:-1]) for ranks in t["ranks"])
    checks = [
        Check("automatic rank determination compresses the max-rank TT",
              "learned ranks below the initial max rank: max-rank TT params / learned-rank params > 1",
              f"ranks {ranks_text} (max {max_text}); {t['params']} -> {b['params']} params "
              f"({fmt(ratio_tt)}x vs max-rank TT, {fmt(ratio_dense)}x vs dense)",
              ratio_tt > 1.0, HAWKINS + " (7.4x-137x smaller than dense)"),
        Check("similar accuracy after rank selection",
              f"pruned Bayesian TT test accuracy >= deterministic max-rank TT - {100 * cfg.acc_tol:g} points",
              f"{100 * b['accuracy']:.1f}% vs {100 * t['accuracy']:.1f}% (dense {100 * d['accuracy']:.1f}%)",
              b["accuracy"] >= t["accuracy"] - cfg.acc_tol, HAWKINS),
        Check("cutting the shrunk slices costs nothing",
              f"posterior-mean test accuracy of the pruned net >= the unpruned net's - {100 * cfg.acc_tol:g} points "
              "(paired, no Monte-Carlo noise)",
              f"{100 * b['posterior_mean_accuracy']:.1f}% vs {100 * bf['posterior_mean_accuracy']:.1f}%",
              b["posterior_mean_accuracy"] >= bf["posterior_mean_accuracy"] - cfg.acc_tol,
              HAWKINS + " (rank-shrinkage prior, Sec. 3)"),
        Check("Bayesian NLL no worse than the deterministic TT",
              "test NLL of the posterior predictive <= NLL of the deterministic max-rank TT",
              f"{fmt(b['nll'])} vs {fmt(t['nll'])} nats (dense {fmt(d['nll'])})",
              b["nll"] <= t["nll"], HAWKINS + " (uncertainty quantification)"),
        Check("Bayesian ECE no worse than the deterministic TT",
              f"ECE ({cfg.n_bins} bins) <= deterministic TT's + {cfg.ece_tol:g}",
              f"{fmt(b['ece'])} vs {fmt(t['ece'])} (dense {fmt(d['ece'])})",
              b["ece"] <= t["ece"] + cfg.ece_tol, HAWKINS + " (uncertainty quantification)"),
        Check("Bayesian TT flags out-of-distribution inputs at least as well",
              "AUROC of predictive entropy (test vs OOD, mean over Gaussian-noise and shuffled-pixel inputs) "
              ">= deterministic TT's",
              f"{fmt(b['auroc_mean'])} vs {fmt(t['auroc_mean'])} (dense {fmt(d['auroc_mean'])})",
              b["auroc_mean"] >= t["auroc_mean"], HAWKINS + " (uncertainty quantification; not a reported number)"),
        Check("the ELBO improves during training",
              "ELBO per example at the end > at the start",
              f"{fmt(float(elbo[0]))} -> {fmt(float(elbo[-1]))} nats/example",
              bool(np.isfinite(elbo[-1]) and elbo[-1] > elbo[0]), "variational inference (Blundell et al. 2015)"),
    ]
    metrics = {"models": {k: {kk: vv for kk, vv in v.items() if kk != "reliability"} for k, v in results.items()},
               "learned_ranks": b["ranks"], "max_ranks": t["ranks"],
               "compression_vs_dense": ratio_dense, "compression_vs_max_rank_tt": ratio_tt,
               "elbo_history": [[int(s), float(e)] for s, e in history]}
    arrays = {f"reliability_{k}_{f}": np.asarray(results[k]["reliability"][f], dtype=float)
              for k in ("dense", "tt", "bayes") for f in ("confidence", "accuracy", "counts")}
    notes = (f"Rank selection cut the TT ranks from {max_text} to {ranks_text}: {b['params']} parameters, "
             f"{ratio_dense:.1f}x fewer than the dense net and {ratio_tt:.1f}x fewer than the max-rank TT, at "
             f"{100 * b['accuracy']:.1f}% test accuracy (max-rank TT {100 * t['accuracy']:.1f}%, dense "
             f"{100 * d['accuracy']:.1f}%). NLL {b['nll']:.3f} vs {t['nll']:.3f} (TT) and {d['nll']:.3f} (dense); "
             f"ECE {b['ece']:.3f} vs {t['ece']:.3f} and {d['ece']:.3f}; OOD AUROC {b['auroc_mean']:.3f} vs "
             f"{t['auroc_mean']:.3f} and {d['auroc_mean']:.3f}.")
    return StudyResult(metrics, checks, arrays, {}, notes=notes)


# --------------------------------------------------------------------------- figures
LABELS = {"dense": "dense MLP", "tt": "TT (max rank)", "bayes": "Bayesian TT (learned ranks)"}


def _reliability_figure(cfg, results):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharey=True)
    for ax, key in zip(axes, ("dense", "tt", "bayes")):
        rel = results[key]["reliability"]
        edges = np.asarray(rel["bin_edges"])
        centers, width = 0.5 * (edges[1:] + edges[:-1]), edges[1] - edges[0]
        acc = np.nan_to_num(np.asarray(rel["accuracy"], dtype=float))
        conf = np.nan_to_num(np.asarray(rel["confidence"], dtype=float))
        ax.bar(centers, acc, width=width * 0.95, color="C0", alpha=0.8, label="accuracy")
        ax.bar(centers, conf - acc, bottom=acc, width=width * 0.95, color="C3", alpha=0.3, hatch="//",
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_title(f"{LABELS[key]}\nECE {results[key]['ece']:.3f}, NLL {results[key]['nll']:.3f}", fontsize=9)
        ax.set_xlabel("confidence (max probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Reliability diagrams ({cfg.dataset} test set, {cfg.n_bins} bins)", fontsize=10)
    fig.tight_layout()
    return fig


def _ranks_figure(cfg, lambdas, learned, max_ranks, history, sweep=(), results=None):
    import matplotlib.pyplot as plt

    fig, (ax, ax3, ax2) = plt.subplots(1, 3, figsize=(15, 3.8))
    if sweep:
        params = [s["params"] for s in sweep]
        ax3.plot(params, [100 * s["accuracy"] for s in sweep], "o-", color="C0", label="Bayesian TT, pruned")
        for s in sweep:
            ax3.annotate(f"{s['threshold']:g}", (s["params"], 100 * s["accuracy"]), fontsize=7,
                         textcoords="offset points", xytext=(3, 3))
        if results is not None:
            for key, marker, color in (("tt", "s", "C3"), ("dense", "^", "C1")):
                ax3.plot(results[key]["params"], 100 * results[key]["accuracy"], marker, ms=8, color=color,
                         label=LABELS[key])
        ax3.set_xscale("log")
        ax3.set_xlabel("parameters (deployed)")
        ax3.set_ylabel("test accuracy (%)")
        ax3.set_title("Accuracy vs size over pruning thresholds", fontsize=10)
        ax3.legend(fontsize=7)
    x0 = 0
    ticks, names = [], []
    for i, lams in enumerate(lambdas):
        for k, lam in enumerate(lams):
            rel = np.sort(lam / lam.max())[::-1]
            xs = x0 + np.arange(len(rel))
            ax.semilogy(xs, rel, "o-", ms=3, color=f"C{i}", label=f"layer {i + 1}" if k == 0 else None)
            ticks.append(x0 + len(rel) / 2)
            names.append(f"L{i + 1} r{k + 1}={learned[i][k + 1]}/{max_ranks[i][k + 1]}")
            x0 += len(rel) + 2
    ax.axhline(cfg.threshold, color="k", ls=":", lw=1, label=f"threshold {cfg.threshold:g}")
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, rotation=30, fontsize=7, ha="right")
    ax.set_ylabel("rank-slice variance / largest of its rank")
    ax.set_title("Learned rank-slice scales (sorted)", fontsize=10)
    ax.legend(fontsize=7)
    if history:
        steps, elbo = zip(*history)
        ax2.plot(steps, elbo, "o-", color="C2")
    ax2.axvline(cfg.kl_warmup * cfg.steps, color="k", ls=":", lw=1, label="end of KL warm-up")
    ax2.set_xlabel("step")
    ax2.set_ylabel("ELBO per example (nats)")
    ax2.set_title("Evidence lower bound during training", fontsize=10)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _entropy_figure(probs):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for ax, key in zip(axes, ("dense", "tt", "bayes")):
        bins = np.linspace(0, math.log(probs[key]["in"].shape[1]), 30)
        for j, (kind, label) in enumerate((("in", "test"), ("gaussian", "Gaussian noise"),
                                           ("shuffled_pixels", "shuffled pixels"))):
            ax.hist(predictive_entropy(probs[key][kind]), bins=bins, alpha=0.45, color=f"C{j}", label=label,
                    density=True)
        ax.set_title(LABELS[key], fontsize=9)
        ax.set_xlabel("predictive entropy (nats)")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="tt-rank-selection",
    description="Bayesian TT nets: rank-slice priors shrink unused TT ranks (compression); "
                "NLL, ECE and OOD AUROC vs deterministic TT and dense nets.",
    paper="Hawkins & Zhang 2019, Bayesian tensorized neural networks with automatic rank selection",
    config=TTRankSelectionConfig, presets=PRESETS, run=run))
