"""Associative memories: a neuron's weighted sum as a linear AM, its closed-form theory, and AM layers.

    from overparam.memory import LinearAM, random_patterns, random_targets, theory
    X, y = random_patterns(128, 256, seed=0), random_targets(128, seed=1)
    am = LinearAM(256, rule="pinv").store(X, y)
    am.recall(X, noise_std=0.05, seed=2)          # noisy recall
    theory.pinv_noise_gain(128, 256)               # predicted output-noise gain
"""

from overparam.memory import theory
from overparam.memory.layers import HopfieldAttractor, KWinners
from overparam.memory.linear_am import (
    RULES,
    LinearAM,
    cosine_to_targets,
    normalize_rows,
    random_patterns,
    random_targets,
    recall_stats,
)

__all__ = ["HopfieldAttractor", "KWinners", "RULES", "LinearAM", "cosine_to_targets", "normalize_rows",
           "random_patterns", "random_targets",
           "recall_stats", "theory"]
