"""Attractor layers in a network: AM -> separator -> modern-Hopfield attractor vs an MLP of equal size.

The essay "Towards demystifying over-parameterization" (issue 7) suggests adding attractor layers between
the associative memories and separators of a network, so that a corrupted representation falls back to a
stored one. The attractor here is the modern-Hopfield update xi <- X^T softmax(beta X xi) of Ramsauer et al.
2020 ("Hopfield networks is all you need") over learned stored patterns X (one step = one attention head
with tied keys and values). Compared with the MLP in-h-h-out: the attractor net in-h-[Hopfield, h+1
patterns]-out has exactly the same number of parameters. Measured: clean accuracy, noise score (Ahmad &
Scheinkman 2019: a fraction 0..0.5 of input entries replaced by mean + 2 SD, correct answers summed over 11
levels) and how sharply the attractor retrieves (mean of the largest softmax weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from overparam.config import param
from overparam.models import MLP, seeded
from overparam.memory.nets import AttractorMLP, count
from overparam.studies.am_common import NetworkDataConfig
from overparam.studies.am_common import (NOISE_SOURCE, accuracy, fit, load_capped, noise_curve_figure,
                                         noise_robustness, noise_value, replace_entries)
from overparam.studies.base import Check, MAX_EXAMPLES, RunContext, Study, StudyResult, fmt, register

RAMSAUER = "Ramsauer et al. 2020 (modern Hopfield update, one-step retrieval)"
ESSAY = "essay 'Towards demystifying over-parameterization' (issue 7): attractor layers for error correction"
AHMAD = NOISE_SOURCE


@dataclass
class AttractorNetsConfig(NetworkDataConfig):
    width: int = param(128, "hidden width h (the attractor stores h + 1 patterns of dimension h)", min=8, max=2048)
    beta: float = param(1.0, "inverse temperature of the attractor (fixed; pattern lengths are learned)",
                        min=1e-3, max=1e3)
    steps: int = param(1, "attractor updates per forward pass", min=1, max=20)
    epochs: int = param(40, "training epochs (Adam)", min=1, max=10000)
    lr: float = param(1e-3, "Adam learning rate", min=1e-6, max=1.0)
    batch_size: int = param(100, "minibatch size", min=1, max=MAX_EXAMPLES)
    repeats: int = param(1, "initializations per model; accuracies and noise scores are averaged", min=1, max=100)


PRESETS = {
    # both models fit the training set (40 epochs at 1e-3 leave the attractor net at 94% train accuracy);
    # three initializations, since single runs swing by +-20% in noise score
    "quick": {"dataset": "digits", "epochs": 100, "lr": 3e-3, "repeats": 3},
    "paper": {"dataset": "mnist1d", "n_train": 8000, "n_test": 2000, "width": 256, "epochs": 100, "steps": 3,
              "repeats": 5},
}


@torch.no_grad()
def _retrieval_sharpness(model: AttractorMLP, X: torch.Tensor) -> float:
    """Mean over examples of the largest attention weight in the first attractor update (1 = retrieves one
    stored pattern, 1/P = averages all of them)."""
    xi = torch.relu(model.am(X))
    return float(model.attractor.attention(xi).max(dim=1).values.mean())


def run(cfg: AttractorNetsConfig, ctx: RunContext) -> StudyResult:
    data = load_capped(cfg.dataset, cfg.seed, cfg.n_train, cfg.n_test)
    X, y, Xt, yt = data.X_train.float(), data.y_train, data.X_test.float(), data.y_test
    n_in, n_out = X.shape[1], data.n_classes
    value = noise_value(X)
    builders = {"mlp": lambda: MLP(n_in, [cfg.width, cfg.width], n_out),
                "attractor": lambda: AttractorMLP(n_in, cfg.width, n_out, beta=cfg.beta, steps=cfg.steps)}
    runs = {name: [] for name in builders}
    total = len(builders) * cfg.epochs * cfg.repeats
    with threadpool_limits(limits=1), ctx.progress.bar(total, "attractor-nets") as bar:
        for rep in range(cfg.repeats):
            for i, (name, build) in enumerate(builders.items()):
                model = seeded(build, seed=cfg.seed * 1000 + 29 + 101 * rep)
                losses = fit(model, X, y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                             seed=cfg.seed + i + 13 * rep, bar=bar)
                row = {"params": count(model), "clean_accuracy": accuracy(model, Xt, yt),
                       "train_accuracy": accuracy(model, X, y), "final_loss": losses[-1],
                       **{f"noise_{k}": v for k, v in noise_robustness(model, Xt, yt, value, seed=cfg.seed).items()}}
                if name == "attractor":
                    row["retrieval_sharpness"] = _retrieval_sharpness(model, Xt)
                    row["beta"] = model.attractor.beta.item()
                    row["sharpness_at_max_noise"] = _retrieval_sharpness(model, replace_entries(Xt, 0.5, value,
                                                                                                cfg.seed))
                runs[name].append(row)
    res = {}
    for name, rows in runs.items():
        res[name] = {k: (rows[0][k] if k in ("params", "noise_levels", "noise_max_score") else
                         (np.mean([r[k] for r in rows], axis=0).tolist() if k == "noise_accuracy" else
                          float(np.mean([r[k] for r in rows])))) for k in rows[0]}
        res[name]["noise_score"] = int(round(res[name]["noise_score"]))
        res[name]["noise_score_per_repeat"] = [r["noise_score"] for r in rows]
    return _summarize(cfg, res)


def _summarize(cfg, res) -> StudyResult:
    m, a = res["mlp"], res["attractor"]
    n_patterns = cfg.width + 1
    checks = [
        Check("equal parameter counts", "MLP in-h-h-out = attractor net in-h-[Hopfield, h+1 patterns]-out",
              f"{m['params']} vs {a['params']}", m["params"] == a["params"], "issue 7 (dense baseline of equal size)"),
        Check("the attractor retrieves rather than averages",
              f"mean largest softmax weight > 0.5 (uniform averaging: 1/{n_patterns} = {1 / n_patterns:.3f})",
              fmt(a["retrieval_sharpness"]), a["retrieval_sharpness"] > 0.5, RAMSAUER),
        Check("attractor net is more noise-robust than the MLP",
              f"noise score of the attractor net > MLP's (mean of {cfg.repeats} initializations)",
              f"{a['noise_score']} vs {m['noise_score']} of {m['noise_max_score']} "
              f"({100 * (a['noise_score'] / max(m['noise_score'], 1) - 1):+.1f}%)",
              a["noise_score"] > m["noise_score"], ESSAY + "; " + AHMAD),
        Check("clean accuracy is kept", "attractor net within 3 points of the MLP",
              f"{100 * a['clean_accuracy']:.1f}% vs {100 * m['clean_accuracy']:.1f}%",
              a["clean_accuracy"] >= m["clean_accuracy"] - 0.03, ESSAY),
    ]
    metrics = {name: {k: v for k, v in r.items() if k != "noise_levels"} for name, r in res.items()}
    arrays = {"noise_levels": np.array(m["noise_levels"])}
    for name, r in res.items():
        arrays[f"{name}_noise_accuracy"] = np.array(r["noise_accuracy"])
    notes = (f"Clean accuracy MLP {100 * m['clean_accuracy']:.1f}% vs attractor net {100 * a['clean_accuracy']:.1f}%; "
             f"noise score {m['noise_score']} vs {a['noise_score']} (max {m['noise_max_score']}); the attractor's "
             f"largest softmax weight averages {a['retrieval_sharpness']:.2f} (beta {a['beta']:.2f}).")
    return StudyResult(metrics, checks, arrays, {"attractor_nets": _figure(cfg, res)}, notes=notes)


def _figure(cfg, res):
    labels = {"mlp": f"MLP {cfg.width}-{cfg.width}", "attractor": f"AM-ReLU-Hopfield ({cfg.width + 1} patterns)"}
    return noise_curve_figure(res, labels, f"Attractor layer vs MLP of equal size ({cfg.dataset})")


STUDY = register(Study(
    name="attractor-nets",
    description="AM -> separator -> modern-Hopfield attractor vs an MLP of equal size: accuracy, noise score.",
    paper="Ramsauer et al. 2020; Ahmad & Scheinkman 2019 (noise score); essay 'Towards demystifying "
          "over-parameterization'",
    config=AttractorNetsConfig, presets=PRESETS, run=run))
