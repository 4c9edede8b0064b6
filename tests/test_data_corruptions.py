"""Corruptions of overparam.data: label noise, random labels, pixel permutations, Gaussian inputs."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from overparam.data import (
    CORRUPTIONS,
    DataError,
    corrupt,
    gaussian_inputs,
    label_noise,
    load_dataset,
    random_labels,
    random_pixels,
    shuffle_pixels,
)

# No deadline: the first call into torch can be slow, and timing is not what is under test.
PROPERTY = settings(max_examples=60, deadline=None)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def labels_strategy():
    return st.integers(2, 10).flatmap(
        lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), min_size=1, max_size=200))
    )


def inputs_strategy():
    return st.tuples(st.integers(1, 12), st.integers(1, 30), seeds).map(
        lambda t: (torch.randn(t[0], t[1], generator=torch.Generator().manual_seed(t[2] % 1000)), t[2])
    )


def expected_count(p: float, n: int) -> int:
    return math.floor(p * n + 0.5)  # round(p * n), halves up


# --- label noise --------------------------------------------------------------------------


@PROPERTY
@given(labels_strategy(), st.floats(0.0, 1.0), seeds)
def test_label_noise_changes_exactly_round_pn_labels_each_to_a_different_class(k_and_labels, p, seed):
    k, values = k_and_labels
    y = torch.tensor(values, dtype=torch.int64)
    original = y.clone()
    noisy, mask = label_noise(y, p, k, seed)
    assert torch.equal(y, original)  # input untouched
    assert noisy.dtype == torch.int64 and mask.dtype == torch.bool and noisy.shape == y.shape
    assert int(mask.sum()) == expected_count(p, len(values))
    assert torch.equal(mask, noisy != y)  # every chosen label differs; no other label moved
    assert int(noisy.min()) >= 0 and int(noisy.max()) < k


@PROPERTY
@given(labels_strategy(), seeds)
def test_label_noise_with_p_zero_changes_nothing(k_and_labels, seed):
    k, values = k_and_labels
    y = torch.tensor(values)
    noisy, mask = label_noise(y, 0.0, k, seed)
    assert torch.equal(noisy, y) and not mask.any()


def test_label_noise_new_labels_are_uniform_over_the_other_classes():
    k, n = 5, 20000
    y = torch.arange(n) % k
    noisy, mask = label_noise(y, 1.0, k, seed=11)
    shift = (noisy - y) % k  # 1..k-1 for a different class
    counts = torch.bincount(shift, minlength=k).tolist()
    assert counts[0] == 0
    # Each of the 4 shifts expects 5000 (binomial sd ~61); allow 5 sd.
    assert all(abs(c - n / (k - 1)) < 310 for c in counts[1:])


def test_label_noise_is_deterministic_in_the_seed_and_validates_input():
    y = torch.arange(100) % 10
    assert torch.equal(label_noise(y, 0.3, 10, 1)[0], label_noise(y, 0.3, 10, 1)[0])
    assert not torch.equal(label_noise(y, 0.3, 10, 1)[1], label_noise(y, 0.3, 10, 2)[1])
    with pytest.raises(DataError, match=r"p must be a number in \[0, 1\], got 1.5"):
        label_noise(y, 1.5, 10, 0)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 4\] for n_classes=5"):
        label_noise(y, 0.1, 5, 0)
    with pytest.raises(DataError, match=r"n_classes must be an integer >= 2, got 1"):
        label_noise(torch.zeros(4, dtype=torch.int64), 0.5, 1, 0)


def test_random_labels_are_uniform_and_ignore_the_truth():
    y = torch.zeros(30000, dtype=torch.int64)
    fresh = random_labels(y, 3, seed=5)
    counts = torch.bincount(fresh, minlength=3).tolist()
    assert all(abs(c - 10000) < 410 for c in counts)  # sd ~82
    assert torch.equal(fresh, random_labels(y, 3, seed=5))
    assert not torch.equal(fresh, random_labels(y, 3, seed=6))


# --- input corruptions ----------------------------------------------------------------------


@PROPERTY
@given(inputs_strategy())
def test_shuffle_pixels_is_one_permutation_shared_by_all_rows(X_and_seed):
    X, seed = X_and_seed
    n, d = X.shape
    # Distinct, row-tagged values reveal the permutation: X[i, j] = i * d + j.
    tagged = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    out = shuffle_pixels(tagged, seed)
    permutation = out - (torch.arange(n) * d)[:, None]
    assert torch.equal(permutation, permutation[:1].expand(n, d))
    assert torch.equal(permutation[0].sort().values, torch.arange(d, dtype=torch.float32))
    # Same seed, other tensor of the same width: the same permutation.
    shuffled = shuffle_pixels(X, seed)
    assert torch.equal(shuffled, X[:, permutation[0].long()])
    assert torch.equal(shuffled.sort(dim=1).values, X.sort(dim=1).values)


@PROPERTY
@given(inputs_strategy())
def test_random_pixels_preserves_each_rows_multiset(X_and_seed):
    X, seed = X_and_seed
    original = X.clone()
    out = random_pixels(X, seed)
    assert torch.equal(X, original) and out.shape == X.shape
    assert torch.equal(out.sort(dim=1).values, X.sort(dim=1).values)
    assert torch.equal(out, random_pixels(X, seed))


def test_random_pixels_gives_rows_different_permutations_and_keeps_feature_shape():
    tagged = torch.arange(20).float().repeat(50, 1)  # every row 0..19
    out = random_pixels(tagged, seed=0)
    assert len({tuple(row.tolist()) for row in out}) == 50
    images = torch.rand(4, 1, 5, 5)
    assert random_pixels(images, 1).shape == images.shape and shuffle_pixels(images, 1).shape == images.shape


def test_gaussian_inputs_match_per_feature_mean_and_std():
    generator = torch.Generator().manual_seed(0)
    means = torch.tensor([-3.0, 0.0, 2.0, 10.0])
    stds = torch.tensor([0.5, 1.0, 2.0, 4.0])
    X = means + stds * torch.rand(20000, 4, generator=generator) * math.sqrt(12)  # uniform, not Gaussian
    X = X - X.mean(0) + means
    noise = gaussian_inputs(X, seed=3)
    assert noise.shape == X.shape and noise.dtype == X.dtype
    assert torch.allclose(noise.mean(0), X.mean(0), atol=0.1)
    assert torch.allclose(noise.std(0), X.std(0), rtol=0.03)
    assert not torch.equal(noise, gaussian_inputs(X, seed=4))


# --- corrupt() ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("blobs", k=4, d=6, n_train=200, n_test=100, seed=0)


def test_corrupt_label_noise_touches_training_labels_only_and_records_it(blobs):
    noisy = corrupt(blobs, "label_noise", p=0.25, seed=1)
    assert int((noisy.y_train != blobs.y_train).sum()) == 50
    assert torch.equal(noisy.y_test, blobs.y_test) and torch.equal(noisy.X_train, blobs.X_train)
    assert torch.equal(noisy.y_train_clean, blobs.y_train)
    assert torch.equal(noisy.train_corrupted, noisy.y_train != blobs.y_train)
    assert noisy.meta["corruptions"] == [{"kind": "label_noise", "seed": 1, "apply_to": "train", "p": 0.25, "n_train_changed": 50}]
    assert "corruptions" not in blobs.meta and blobs.y_train_clean is None  # original untouched
    json.dumps(noisy.meta)
    # The mask follows subsets, for memorization studies on a prefix.
    assert torch.equal(noisy.subset(n_train=40).train_corrupted, noisy.train_corrupted[:40])


def test_corrupt_composes_and_keeps_the_original_clean_labels(blobs):
    twice = corrupt(corrupt(blobs, "label_noise", p=0.1, seed=1), "random_labels", seed=2)
    assert torch.equal(twice.y_train_clean, blobs.y_train)
    assert [c["kind"] for c in twice.meta["corruptions"]] == ["label_noise", "random_labels"]
    assert torch.equal(twice.train_corrupted, twice.y_train != blobs.y_train)


def test_corrupt_shuffled_pixels_permutes_train_and_test_alike(blobs):
    shuffled = corrupt(blobs, "shuffled_pixels", seed=3)
    assert torch.equal(shuffled.X_train, shuffle_pixels(blobs.X_train, 3))
    assert torch.equal(shuffled.X_test, shuffle_pixels(blobs.X_test, 3))
    assert not torch.equal(shuffled.X_train, blobs.X_train) and torch.equal(shuffled.y_train, blobs.y_train)


def test_corrupt_random_pixels_defaults_to_train_and_gaussian_replaces_both(blobs):
    pixels = corrupt(blobs, "random_pixels", seed=3)
    assert not torch.equal(pixels.X_train, blobs.X_train) and torch.equal(pixels.X_test, blobs.X_test)
    both = corrupt(blobs, "random_pixels", seed=3, apply_to="both")
    assert not torch.equal(both.X_test, blobs.X_test)
    gaussian = corrupt(blobs, "gaussian", seed=3)
    assert gaussian.meta["corruptions"][0]["apply_to"] == "both"
    assert not torch.equal(gaussian.X_train, blobs.X_train) and not torch.equal(gaussian.X_test, blobs.X_test)
    assert not torch.equal(gaussian.X_train[:100], gaussian.X_test)  # separate noise streams


def test_corrupt_is_deterministic_and_none_is_a_copy(blobs):
    for kind in CORRUPTIONS:
        options = {"p": 0.2} if kind == "label_noise" else {}
        a, b = corrupt(blobs, kind, seed=9, **options), corrupt(blobs, kind, seed=9, **options)
        assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_train, b.y_train), kind
    same = corrupt(blobs, "none")
    assert torch.equal(same.X_train, blobs.X_train) and same.meta == blobs.meta and same.meta is not blobs.meta


def test_corrupt_rejects_bad_requests(blobs):
    with pytest.raises(DataError, match=r"kind must be one of: none, label_noise, random_labels, shuffled_pixels"):
        corrupt(blobs, "flip")
    with pytest.raises(DataError, match=r"kind='label_noise' needs p"):
        corrupt(blobs, "label_noise")
    with pytest.raises(DataError, match=r"p must be a number in \[0, 1\], got 1.5"):
        corrupt(blobs, "label_noise", p=1.5)
    with pytest.raises(DataError, match=r"p applies only to kind='label_noise', not 'gaussian'"):
        corrupt(blobs, "gaussian", p=0.5)
    with pytest.raises(DataError, match=r"apply_to must be one of: train, test, both; got 'all'"):
        corrupt(blobs, "random_pixels", apply_to="all")
    regression = load_dataset("doppler", n_train=10, n_test=10)
    with pytest.raises(DataError, match=r"label_noise needs a classification dataset; 'doppler' is regression"):
        corrupt(regression, "label_noise", p=0.1)
