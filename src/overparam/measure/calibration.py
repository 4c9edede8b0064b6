"""Calibration and out-of-distribution instruments for classifiers: pure functions of predicted probabilities.

Every function takes class probabilities ``probs`` of shape (n, K) (NumPy array or torch tensor; rows sum to 1)
and integer ``labels`` of shape (n,), and returns plain floats or a small dataclass. Nothing here trains,
samples or draws: a Bayesian model's predictive distribution is averaged by the caller (e.g. the mean of S
posterior samples' softmax outputs) and handed in like any other probabilities.

- :func:`nll`: mean negative log-likelihood -log p(y|x) of the true labels (nats).
- :func:`expected_calibration_error` / :func:`reliability_curve`: Guo et al. 2017 -- confidence (max prob)
  binned into ``n_bins`` equal-width bins ((0, 1/B], (1/B, 2/B], ..., ((B-1)/B, 1]); ECE = sum over bins of
  (bin count / n) * |accuracy in bin - mean confidence in bin|.
- :func:`predictive_entropy`, :func:`max_probability`: uncertainty scores.
- :func:`ood_auroc`: area under the ROC curve for telling out-of-distribution inputs (positives) from
  in-distribution ones by a score that should be higher out of distribution (e.g. predictive entropy, or
  minus the max probability); 1 = perfectly separable, 0.5 = chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency of overparam
        pass
    arr = np.asarray(x)
    if dtype is not None:
        arr = arr.astype(dtype)
    return arr


def _check(probs, labels=None):
    p = _as_numpy(probs, "probs")
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (n, K) with K >= 2 classes, got {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < -1e-6:
        raise ValueError("probs must be finite and non-negative")
    if not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs: every row must sum to 1 (pass softmax outputs, not logits)")
    if labels is None:
        return p, None
    y = _as_numpy(labels, "labels", dtype=None)
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"labels must have shape ({len(p)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError("labels must be integer class indices")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}]")
    return p, y.astype(np.int64)


def nll(probs, labels, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true labels, -mean log max(p[y], eps) (nats)."""
    p, y = _check(probs, labels)
    if len(y) == 0:
        raise ValueError("nll: need at least one example")
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], eps))))


def accuracy(probs, labels) -> float:
    p, y = _check(probs, labels)
    return float(np.mean(p.argmax(1) == y))


@dataclass
class ReliabilityCurve:
    """Per-bin statistics of a reliability diagram; empty bins hold NaN accuracy/confidence and count 0."""

    bin_edges: np.ndarray     # (n_bins + 1,) from 0 to 1
    confidence: np.ndarray    # (n_bins,) mean max-probability in the bin
    accuracy: np.ndarray      # (n_bins,) fraction correct in the bin
    counts: np.ndarray        # (n_bins,) examples in the bin
    ece: float                # sum_b counts_b / n * |accuracy_b - confidence_b|
    mce: float                # max over non-empty bins of |accuracy_b - confidence_b|

    def to_dict(self) -> dict:
        return {"bin_edges": self.bin_edges.tolist(), "confidence": self.confidence.tolist(),
                "accuracy": self.accuracy.tolist(), "counts": self.counts.tolist(), "ece": self.ece,
                "mce": self.mce}


def reliability_curve(probs, labels, n_bins: int = 15) -> ReliabilityCurve:
    """Reliability diagram data: confidence = max probability, bins (b/B, (b+1)/B], the first one closed at 0."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins}")
    n_bins = int(n_bins)
    p, y = _check(probs, labels)
    if len(y) == 0:
        raise ValueError("reliability_curve: need at least one example")
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    # Right-closed bins: a confidence of exactly 0.8 with 5 bins falls in (0.6, 0.8].
    idx = np.clip(np.ceil(conf * n_bins - 1e-12).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
        mean_acc = np.bincount(idx, weights=correct, minlength=n_bins) / counts
    gaps = np.abs(mean_acc - mean_conf)
    nonempty = counts > 0
    ece = float(np.sum(counts[nonempty] / len(y) * gaps[nonempty]))
    mce = float(gaps[nonempty].max())
    return ReliabilityCurve(np.linspace(0.0, 1.0, n_bins + 1), mean_conf, mean_acc, counts, ece, mce)


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017, Eq. 3); 0 = perfectly calibrated."""
    return reliability_curve(probs, labels, n_bins).ece


def predictive_entropy(probs) -> np.ndarray:
    """Entropy -sum_k p_k log p_k of every row (nats); 0 for one-hot, log K for uniform."""
    p, _ = _check(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(1)


def max_probability(probs) -> np.ndarray:
    p, _ = _check(probs)
    return p.max(1)


def ood_auroc(scores_in, scores_out) -> float:
    """AUROC of telling out-of-distribution inputs (label 1) from in-distribution ones (label 0).

    A score must be *higher* for inputs the model should flag (predictive entropy, or minus the max
    probability). Ties count one half, as in sklearn.metrics.roc_auc_score (which computes it).
    """
    from sklearn.metrics import roc_auc_score

    s_in = _as_numpy(scores_in, "scores_in").reshape(-1)
    s_out = _as_numpy(scores_out, "scores_out").reshape(-1)
    if len(s_in) == 0 or len(s_out) == 0:
        raise ValueError("ood_auroc: need at least one in-distribution and one out-of-distribution score")
    if not (np.all(np.isfinite(s_in)) and np.all(np.isfinite(s_out))):
        raise ValueError("ood_auroc: scores must be finite")
    labels = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    return float(roc_auc_score(labels, np.concatenate([s_in, s_out])))
