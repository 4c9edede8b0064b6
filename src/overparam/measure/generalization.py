"""A subset of the generalization measures of Jiang et al. 2019 ("Fantastic generalization measures and where to
find them", arXiv 1912.02178, sec. 4-5 and appendix C) for multilayer perceptrons (a chain of nn.Linear layers
with ReLU-like activations between them).

Notation: the d weight matrices W_1..W_d of the Linear layers (biases excluded from the norm measures, included
in the path norm and in the PAC-Bayes bounds, which use the flat vector w of all ``omega`` parameters), m
training examples, gamma the 10th-percentile output margin. As in the paper, norms enter squared.

| key | formula | invariant to ReLU rescaling (W_l -> c W_l, b_l -> c b_l, W_{l+1} -> W_{l+1}/c)? |
|---|---|---|
| ``param_norm`` | sum_l ||W_l||_F^2 | no |
| ``log_prod_of_fro`` | sum_l log ||W_l||_F^2 | yes |
| ``log_sum_of_fro`` | log d + log_prod_of_fro / d (= log of d (prod ||W_l||_F^2)^(1/d), the rebalanced sum) | yes |
| ``log_prod_of_spec``, ``log_sum_of_spec`` | the same with spectral norms ||W_l||_2^2 | yes |
| ``fro_over_spec`` | sum_l ||W_l||_F^2 / ||W_l||_2^2 | yes |
| ``log_spec_orig_main`` | log(prod_l ||W_l||_2^2 * sum_l ||W_l||_F^2 / ||W_l||_2^2) | yes |
| ``path_norm`` | sum over input-output paths of the product of squared weights (biases start paths) = f_{w^2}(1) | yes |
| ``margin`` | gamma: the (m//10)-th smallest of f(x)_y - max_{j!=y} f(x)_j | yes (the function is unchanged) |
| ``inverse_margin`` | 1 / gamma^2 | yes |
| ``log_prod_of_spec_over_margin``, ``log_prod_of_fro_over_margin`` | log_prod - 2 log gamma | yes |
| ``log_sum_of_spec_over_margin``, ``log_sum_of_fro_over_margin`` | log d + (log_prod - 2 log gamma) / d | yes |
| ``path_norm_over_margin`` | path_norm / gamma^2 | yes |
| ``fro_dist``, ``dist_spec_init``, ``l2_dist`` | distances to ``init_model`` (when given) | no |
| ``pacbayes_flatness`` | 1 / sigma^2 (isotropic noise, sigma from ``pacbayes_sigma``) | no |
| ``pacbayes_mag_flatness`` | 1 / sigma'^2 (magnitude-aware noise N(0, sigma'^2 w_i^2 + eps^2)) | nearly (up to eps) |
| ``pacbayes_orig`` / ``pacbayes_init`` | ||v||^2 / (4 sigma^2) + log(m / sigma) + 10, v = w / w - w_0 | no |
| ``pacbayes_mag_orig`` / ``pacbayes_mag_init`` | 1/4 sum_i log((eps^2 + (sigma'^2 + 1) ||v||^2 / omega) / (eps^2 + sigma'^2 v_i^2)) + log(m / sigma') + 10 | no |

The bounds are the quantities inside Jiang et al.'s square roots (they report sqrt(. / m); monotone, so the
Kendall tau is the same). gamma <= 0 (under 90% of the training set fitted with a positive margin) makes the
margin-normalized measures meaningless: they are then nan. Measures needing a margin need integer labels.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from overparam.measure.data import count_examples, iter_batches
from overparam.measure.sharpness import PacBayesSigma, _mode, pacbayes_sigma


@dataclass
class GeneralizationMeasures:
    measures: dict              # name -> float (see the module docstring)
    margins: np.ndarray         # every training example's output margin
    n_layers: int
    n_params: int
    n_examples: int
    sigma: PacBayesSigma | None = None        # isotropic PAC-Bayes sigma
    mag_sigma: PacBayesSigma | None = None    # magnitude-aware sigma
    seconds: float = 0.0
    cost: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        return self.measures[key]


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The model's Linear layers in order, checked to form a chain and to be its only parameters."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("generalization_measures: the model has no nn.Linear layer (MLPs only)")
    own = {id(p) for m in layers for p in m.parameters()}
    other = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in own]
    if other:
        raise ValueError(f"generalization_measures supports MLPs (Linear layers only); other parameters: {other[:5]}")
    for a, b in zip(layers[:-1], layers[1:]):
        if a.out_features != b.in_features:
            raise ValueError(f"Linear layers do not form a chain: {a.out_features} outputs feed {b.in_features} inputs")
    return layers


def path_norm(layers: list[nn.Linear]) -> float:
    """Sum over all paths of the product of squared weights (a bias starts a path): the squared-weight network
    on an all-ones input, with the ReLUs dropped (they are the identity on non-negative inputs)."""
    with torch.no_grad():
        h = torch.ones(layers[0].in_features, dtype=torch.float64)
        for m in layers:
            h = (m.weight.double() ** 2) @ h
            if m.bias is not None:
                h = h + m.bias.double() ** 2
    return float(h.sum())


def output_margins(model: nn.Module, data, batch_size: int = 2048, dtype: torch.dtype = torch.float64,
                   mode: str = "eval") -> np.ndarray:
    """f(x)_y - max_{j != y} f(x)_j for every example (for one output: (2y - 1) f(x))."""
    out = []
    with _mode(model, mode), torch.no_grad():
        for x, y in iter_batches(data, batch_size):
            if torch.is_floating_point(y):
                raise ValueError("the margin needs integer class labels")
            f = model(x).to(dtype)
            y = y.reshape(-1)
            if f.shape[1] == 1:
                out.append(((2 * y - 1).to(dtype) * f[:, 0]).numpy())
                continue
            correct = f.gather(1, y[:, None])[:, 0]
            other = f.scatter(1, y[:, None], float("-inf")).max(1).values
            out.append((correct - other).numpy())
    return np.concatenate(out)


def generalization_measures(model: nn.Module, train_data, loss_fn="cross_entropy", init_model: nn.Module | None = None,
                            pacbayes: bool = True, pacbayes_kw: dict | None = None, batch_size: int = 2048,
                            dtype: torch.dtype = torch.float64, mode: str = "eval",
                            num_threads: int | None = None) -> GeneralizationMeasures:
    """Norm, margin, path-norm and sharpness-based PAC-Bayes measures of an MLP on its training data.

    ``pacbayes_kw`` go to :func:`overparam.measure.sharpness.pacbayes_sigma` for both sigmas (defaults: bound
    the mean loss rise by 0.1, 10 Monte Carlo samples, eps 1e-3 for the magnitude-aware one).
    """
    t0 = time.perf_counter()
    layers = linear_layers(model)
    d = len(layers)
    W = [m.weight.detach().double() for m in layers]
    fro2 = np.array([float(torch.linalg.matrix_norm(w, "fro") ** 2) for w in W])
    spec2 = np.array([float(torch.linalg.matrix_norm(w, 2) ** 2) for w in W])
    flat = torch.cat([p.detach().double().reshape(-1) for p in model.parameters() if p.requires_grad])
    omega = flat.numel()
    m = count_examples(train_data)
    M = {
        "n_params": float(omega),
        "l2": float(flat.norm()),
        "param_norm": float(fro2.sum()),
        "log_prod_of_fro": float(np.log(fro2).sum()),
        "log_prod_of_spec": float(np.log(spec2).sum()),
        "fro_over_spec": float((fro2 / spec2).sum()),
        "path_norm": path_norm(layers),
    }
    M["log_sum_of_fro"] = math.log(d) + M["log_prod_of_fro"] / d
    M["log_sum_of_spec"] = math.log(d) + M["log_prod_of_spec"] / d
    M["log_spec_orig_main"] = M["log_prod_of_spec"] + math.log(M["fro_over_spec"])
    margins = output_margins(model, train_data, batch_size, dtype, mode)
    gamma = float(np.sort(margins)[max(len(margins) // 10, 1) - 1])
    M["margin"] = gamma
    ok = gamma > 0
    lg = 2 * math.log(gamma) if ok else float("nan")
    M["inverse_margin"] = 1 / gamma ** 2 if ok else float("nan")
    for kind in ("fro", "spec"):
        M[f"log_prod_of_{kind}_over_margin"] = M[f"log_prod_of_{kind}"] - lg
        M[f"log_sum_of_{kind}_over_margin"] = math.log(d) + (M[f"log_prod_of_{kind}"] - lg) / d
    M["path_norm_over_margin"] = M["path_norm"] / gamma ** 2 if ok else float("nan")
    w0 = None
    if init_model is not None:
        init_layers = linear_layers(init_model)
        if [tuple(a.weight.shape) for a in init_layers] != [tuple(b.weight.shape) for b in layers]:
            raise ValueError("init_model: its Linear layers differ in shape from the model's")
        D = [a.weight.detach().double() - b for a, b in zip(init_layers, W)]
        M["fro_dist"] = float(sum(torch.linalg.matrix_norm(x, "fro") ** 2 for x in D))
        M["dist_spec_init"] = float(sum(torch.linalg.matrix_norm(x, 2) ** 2 for x in D))
        w0 = torch.cat([p.detach().double().reshape(-1) for p in init_model.parameters() if p.requires_grad])
        M["l2_dist"] = float((flat - w0).norm())
    sig = mag = None
    cost = {}
    if pacbayes:
        kw = {**(pacbayes_kw or {})}
        common = dict(batch_size=batch_size, dtype=dtype, mode=mode, num_threads=num_threads)
        sig = pacbayes_sigma(model, loss_fn, train_data, magnitude=False, **common, **kw)
        mag = pacbayes_sigma(model, loss_fn, train_data, magnitude=True, **common, **kw)
        cost["pacbayes"] = (sig.n_loss_evals + mag.n_loss_evals, sig.seconds + mag.seconds)
        s, sm, eps = sig.sigma, mag.sigma, mag.eps
        M["pacbayes_flatness"] = 1 / s ** 2
        M["pacbayes_mag_flatness"] = 1 / sm ** 2
        vecs = {"orig": flat} if w0 is None else {"orig": flat, "init": flat - w0}
        for name, v in vecs.items():
            n2 = float(v.norm() ** 2)
            M[f"pacbayes_{name}"] = n2 / (4 * s ** 2) + math.log(m / s) + 10
            ratio = (eps ** 2 + (sm ** 2 + 1) * n2 / omega) / (eps ** 2 + sm ** 2 * v ** 2)
            M[f"pacbayes_mag_{name}"] = float(0.25 * torch.log(ratio).sum()) + math.log(m / sm) + 10
    return GeneralizationMeasures(measures=M, margins=margins, n_layers=d, n_params=omega, n_examples=m,
                                  sigma=sig, mag_sigma=mag, seconds=time.perf_counter() - t0, cost=cost)


__all__ = ["GeneralizationMeasures", "generalization_measures", "path_norm", "output_margins", "linear_layers"]
