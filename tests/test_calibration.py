"""Calibration and OOD instruments against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from overparam.measure.calibration import (accuracy, expected_calibration_error, max_probability, nll,
                                           ood_auroc, predictive_entropy, reliability_curve)


def _rows(conf, pred, k=2):
    """Probability rows with max probability ``conf`` on class ``pred`` (rest spread evenly)."""
    p = np.full((len(conf), k), 0.0)
    for i, (c, j) in enumerate(zip(conf, pred)):
        p[i, :] = (1 - c) / (k - 1)
        p[i, j] = c
    return p


def test_nll_hand_computed():
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    y = np.array([0, 0, 0])
    assert nll(p, y) == pytest.approx(-(math.log(0.5) + math.log(0.9) + math.log(0.2)) / 3)
    assert nll(torch.tensor(p), torch.tensor(y)) == pytest.approx(nll(p, y))   # torch inputs too
    assert accuracy(p, y) == pytest.approx(2 / 3)   # ties go to the first class (argmax)
    # a zero probability on the label is clipped, not infinite
    assert np.isfinite(nll(np.array([[1.0, 0.0]]), np.array([1])))


def test_ece_perfectly_calibrated_is_zero():
    # 10 examples at confidence 0.8 with exactly 8 right, 10 at 0.6 with 6 right
    conf = [0.8] * 10 + [0.6] * 10
    y_pred = [0] * 20
    labels = [0] * 8 + [1] * 2 + [0] * 6 + [1] * 4
    p = _rows(conf, y_pred)
    assert expected_calibration_error(p, np.array(labels), n_bins=10) == pytest.approx(0.0, abs=1e-12)


def test_ece_known_miscalibration():
    # 10 at confidence 0.9 with 6 right (gap 0.3), 10 at 0.7 with 7 right (gap 0): ECE = 0.5 * 0.3 = 0.15
    p = _rows([0.9] * 10 + [0.7] * 10, [1] * 20)
    labels = np.array([1] * 6 + [0] * 4 + [1] * 7 + [0] * 3)
    curve = reliability_curve(p, labels, n_bins=10)
    assert curve.ece == pytest.approx(0.15)
    assert curve.mce == pytest.approx(0.3)
    assert curve.counts.sum() == 20
    # 0.9 sits in the right-closed bin (0.8, 0.9], 0.7 in (0.6, 0.7]
    assert curve.counts[8] == 10 and curve.counts[6] == 10
    assert curve.accuracy[8] == pytest.approx(0.6) and curve.confidence[8] == pytest.approx(0.9)
    assert np.isnan(curve.accuracy[0]) and curve.counts[0] == 0
    # one bin pools everything: |mean acc 0.65 - mean conf 0.8| = 0.15 as well here, by a different route
    assert expected_calibration_error(p, labels, n_bins=1) == pytest.approx(0.15)
    # always-wrong confident predictions: ECE = confidence
    assert expected_calibration_error(_rows([0.95] * 4, [0] * 4), np.ones(4, dtype=int), 20) == pytest.approx(0.95)


def test_entropy_and_max_probability():
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(predictive_entropy(p), [0.0, math.log(3), math.log(2)], atol=1e-12)
    np.testing.assert_allclose(max_probability(p), [1.0, 1 / 3, 0.5])


def test_ood_auroc():
    assert ood_auroc([0.1, 0.2, 0.3], [0.5, 0.9]) == pytest.approx(1.0)      # separable
    assert ood_auroc([0.5, 0.9], [0.1, 0.2, 0.3]) == pytest.approx(0.0)      # separable the wrong way
    assert ood_auroc([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.5)           # ties count one half
    # hand count: pairs (in, out) with out > in: out=0.4 beats 0.1, 0.3; out=0.2 beats 0.1 -> 3 of 6
    assert ood_auroc([0.1, 0.3, 0.5], [0.4, 0.2]) == pytest.approx(3 / 6)


def test_input_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        nll(np.array([[2.0, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="labels must lie"):
        nll(np.array([[0.5, 0.5]]), np.array([2]))
    with pytest.raises(ValueError, match="n_bins"):
        reliability_curve(np.array([[0.5, 0.5]]), np.array([0]), n_bins=0)
    with pytest.raises(ValueError, match="at least one"):
        ood_auroc([], [1.0])
