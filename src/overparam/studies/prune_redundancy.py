"""Prune, then spend the freed weights on repetition-code copies: noise robustness at a fixed weight budget.

The essay "Towards demystifying over-parameterization" (issue 7) proposes pruning a trained network and
reusing the zeroed weights for repetition-code error correction. Here the "copies" are r = 1/keep pruned
networks (each magnitude-pruned to the fraction `keep` of its weights, then fine-tuned with the mask fixed),
trained from different initializations, whose logits are averaged: together they use about the nonzero weights
of one dense network. Compared: dense, one pruned network, and the redundant ensemble -- clean accuracy and the
noise score of Ahmad & Scheinkman 2019 (a fraction 0..0.5 of the input entries replaced by mean + 2 SD,
correct answers summed over 11 levels).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from overparam.config import param
from overparam.models import MLP, seeded
from overparam.memory.nets import mask_applier, nonzero_parameters
from overparam.studies.am_common import NetworkDataConfig
from overparam.studies.am_common import (accuracy, fit, load_capped, noise_curve_figure, noise_robustness,
                                         noise_value)
from overparam.studies.base import Check, MAX_EXAMPLES, RunContext, Study, StudyResult, register

ESSAY = "essay 'Towards demystifying over-parameterization' (issue 7): prune, then reuse weights as repetition code"
FRANKLE = "Frankle & Carbin 2019 (pruned to 10-20% of the weights, accuracy is kept)"


@dataclass
class PruneRedundancyConfig(NetworkDataConfig):
    width: int = param(128, "hidden width of the in-h-h-out MLP", min=8, max=2048)
    keep: float = param(0.25, "fraction of weights kept per layer by magnitude pruning (copies = 1/keep)",
                        min=0.02, max=0.5)
    epochs: int = param(40, "dense training epochs (Adam)", min=1, max=10000)
    finetune_epochs: int = param(15, "fine-tuning epochs with the pruning mask fixed", min=0, max=10000)
    lr: float = param(1e-3, "Adam learning rate", min=1e-6, max=1.0)
    batch_size: int = param(100, "minibatch size", min=1, max=MAX_EXAMPLES)


PRESETS = {
    "quick": {"dataset": "digits", "epochs": 30, "finetune_epochs": 10},
    "paper": {"dataset": "mnist1d", "n_train": 8000, "n_test": 2000, "width": 256, "epochs": 100,
              "finetune_epochs": 40, "keep": 0.2},
}


class Averaged(torch.nn.Module):
    def __init__(self, models):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, x):
        return torch.stack([m(x) for m in self.models]).mean(0)


def magnitude_masks(model: torch.nn.Module, keep: float) -> dict[str, torch.Tensor]:
    """Layerwise masks keeping the `keep` fraction of each weight matrix with the largest magnitudes."""
    masks = {}
    for name, p in model.named_parameters():
        if p.dim() == 2:
            k = max(1, int(round(keep * p.numel())))
            thresh = p.detach().abs().flatten().kthvalue(p.numel() - k + 1).values
            masks[name] = (p.detach().abs() >= thresh).float()
    return masks


def run(cfg: PruneRedundancyConfig, ctx: RunContext) -> StudyResult:
    data = load_capped(cfg.dataset, cfg.seed, cfg.n_train, cfg.n_test)
    X, y, Xt, yt = data.X_train.float(), data.y_train, data.X_test.float(), data.y_test
    n_in, n_out = X.shape[1], data.n_classes
    value = noise_value(X)
    copies = max(2, int(round(1 / cfg.keep)))
    kw = dict(lr=cfg.lr, batch_size=cfg.batch_size)
    pruned = []
    total = copies * (cfg.epochs + cfg.finetune_epochs)
    with threadpool_limits(limits=1), ctx.progress.bar(total, "prune-redundancy") as bar:
        for c in range(copies):
            dense = seeded(lambda: MLP(n_in, [cfg.width, cfg.width], n_out), seed=cfg.seed * 1000 + 31 + c)
            fit(dense, X, y, epochs=cfg.epochs, seed=cfg.seed + 7 * c, bar=bar, **kw)
            if c == 0:
                dense0 = copy.deepcopy(dense)
            masks = magnitude_masks(dense, cfg.keep)
            net = copy.deepcopy(dense)
            mask_applier(masks)(net)
            if cfg.finetune_epochs:
                fit(net, X, y, epochs=cfg.finetune_epochs, seed=cfg.seed + 7 * c + 1, bar=bar,
                    after_step=mask_applier(masks), **kw)
            pruned.append(net)
    redundant = Averaged(pruned)
    res = {}
    for name, model in (("dense", dense0), ("pruned", pruned[0]), ("redundant", redundant)):
        res[name] = {"nonzero_weights": nonzero_parameters(model), "clean_accuracy": accuracy(model, Xt, yt),
                     **{f"noise_{k}": v for k, v in noise_robustness(model, Xt, yt, value, seed=cfg.seed).items()}}
    return _summarize(cfg, res, copies)


def _summarize(cfg, res, copies) -> StudyResult:
    d, p, r = res["dense"], res["pruned"], res["redundant"]
    checks = [
        Check("the redundant copies fit in the dense budget", "nonzero weights of the copies <= dense's * 1.05",
              f"{r['nonzero_weights']} vs {d['nonzero_weights']} ({copies} copies at keep={cfg.keep:g})",
              r["nonzero_weights"] <= 1.05 * d["nonzero_weights"], ESSAY),
        Check("pruning keeps accuracy", f"pruned (keep {cfg.keep:g}) within 3 points of dense",
              f"{100 * p['clean_accuracy']:.1f}% vs {100 * d['clean_accuracy']:.1f}%",
              p["clean_accuracy"] >= d["clean_accuracy"] - 0.03, FRANKLE),
        Check("repetition copies restore noise robustness", "noise score of the redundant copies > one pruned net's",
              f"{r['noise_score']} vs {p['noise_score']} of {p['noise_max_score']}",
              r["noise_score"] > p["noise_score"], ESSAY),
        Check("reused weights beat the dense net", "noise score of the redundant copies > dense's",
              f"{r['noise_score']} vs {d['noise_score']}", r["noise_score"] > d["noise_score"], ESSAY),
    ]
    metrics = {name: {k: v for k, v in x.items() if k != "noise_levels"} for name, x in res.items()}
    metrics["copies"] = copies
    arrays = {"noise_levels": np.array(d["noise_levels"])}
    for name, x in res.items():
        arrays[f"{name}_noise_accuracy"] = np.array(x["noise_accuracy"])
    notes = (f"Noise score dense {d['noise_score']}, pruned {p['noise_score']}, {copies} pruned copies "
             f"{r['noise_score']} (max {d['noise_max_score']}); clean accuracy {100 * d['clean_accuracy']:.1f}% / "
             f"{100 * p['clean_accuracy']:.1f}% / {100 * r['clean_accuracy']:.1f}%.")
    return StudyResult(metrics, checks, arrays, {"prune_redundancy": _figure(cfg, res, copies)}, notes=notes)


def _figure(cfg, res, copies):
    labels = {"dense": "dense", "pruned": f"pruned (keep {cfg.keep:g})",
              "redundant": f"{copies} pruned copies, averaged"}
    return noise_curve_figure(res, labels, f"Prune, then reuse the weights as copies ({cfg.dataset}, "
                                           f"MLP {cfg.width}-{cfg.width})")


STUDY = register(Study(
    name="prune-redundancy",
    description="Magnitude-prune, then spend the freed weights on averaged pruned copies: noise robustness.",
    paper="essay 'Towards demystifying over-parameterization' (issue 7); Frankle & Carbin 2019; "
          "Ahmad & Scheinkman 2019",
    config=PruneRedundancyConfig, presets=PRESETS, run=run))
