"""Datasets of overparam.data: registry, generated datasets, the Dataset container."""

import json
import math
import random

import numpy as np
import pytest
import torch

from overparam.data import (
    DATASETS,
    TARGET_FUNCTIONS,
    DataError,
    Dataset,
    dataset_options,
    doppler,
    load_dataset,
    piecewise,
)

# Generated or bundled datasets (no files needed), with small sizes to keep tests fast.
SMALL = {
    "blobs": {"n_train": 60, "n_test": 30},
    "moons": {"n_train": 60, "n_test": 30},
    "spirals": {"n_train": 60, "n_test": 30},
    "doppler": {"n_train": 60, "n_test": 30},
    "piecewise": {"n_train": 60, "n_test": 30},
    "patterns": {"n_train": 60, "n_test": 30},
    "digits": {"n_train": 60, "n_test": 30},
}
SEEDED = list(SMALL)  # every one of these depends on the seed


@pytest.fixture(scope="module")
def mnist1d():
    return load_dataset("mnist1d")


def assert_same(a: Dataset, b: Dataset) -> None:
    for field in ("X_train", "y_train", "X_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


# --- registry ---------------------------------------------------------------------------


def test_registry_lists_every_dataset_with_a_description():
    assert set(DATASETS) == {
        "blobs", "moons", "spirals", "mnist1d", "digits", "doppler", "piecewise", "patterns", "npz", "csv", "mnist",
    }
    assert all(isinstance(text, str) and text and "\n" not in text for text in DATASETS.values())


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(DataError, match=r"unknown dataset 'foo'; choose one of: blobs, csv, digits"):
        load_dataset("foo")


def test_unknown_option_names_the_option_and_the_allowed_ones():
    with pytest.raises(DataError, match=r"unknown option 'colour' for dataset 'blobs'; allowed: k, d, cluster_std"):
        load_dataset("blobs", colour="red")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("blobs", {"k": 0}, r"k must be an integer >= 2, got 0"),
        ("blobs", {"d": 2.5}, r"d must be an integer >= 1"),
        ("blobs", {"cluster_std": -1}, r"cluster_std must be a number >= 0"),
        ("blobs", {"center_box": (3, 1)}, r"center_box must be a pair \(low, high\) with low < high"),
        ("moons", {"noise": "lots"}, r"noise must be a number >= 0"),
        ("spirals", {"arms": 4}, r"arms must be one of: 2, 3; got 4"),
        ("doppler", {"design": "sobol"}, r"design must be one of: grid, random; got 'sobol'"),
        ("piecewise", {"noise_std": float("nan")}, r"noise_std must be a number >= 0"),
        ("patterns", {"targets": "words"}, r"targets must be one of: sign, gaussian, classes"),
        ("patterns", {"k": 3}, r"k applies only to targets='gaussian'"),
        ("digits", {"test_fraction": 1.0}, r"test_fraction must be a number in \(0, 1\), got 1.0"),
        ("mnist1d", {"mnist1d_seed": -1}, r"mnist1d_seed must be an integer in \[0, 4294967295\]"),
    ],
)
def test_bad_option_values_name_the_option_and_the_allowed_range(name, options, message):
    with pytest.raises(DataError, match=message):
        load_dataset(name, **options)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"seed": 1.5}, r"seed must be an integer >= 0"),
        ({"n_train": 0}, r"n_train must be an integer >= 1, got 0"),
        ({"n_test": -3}, r"n_test must be an integer >= 0, got -3"),
        ({"n_train": True}, r"n_train must be an integer >= 1, got True"),
    ],
)
def test_bad_common_arguments(arguments, message):
    with pytest.raises(DataError, match=message):
        load_dataset("blobs", **arguments)


def test_data_error_is_a_value_error_with_a_one_line_message():
    with pytest.raises(ValueError) as caught:
        load_dataset("blobs", k=-1)
    assert "\n" not in str(caught.value)


def test_dataset_options_lists_defaults():
    assert dataset_options("blobs") == {"k": 2, "d": 2, "cluster_std": 1.0, "center_box": [-10.0, 10.0]}
    assert dataset_options("mnist1d") == {"mnist1d_seed": 42}
    json.dumps({name: dataset_options(name) for name in DATASETS})


def test_option_values_typed_as_text_are_accepted():
    # A CLI passes key=value pairs as strings.
    data = load_dataset("blobs", n_train=10, n_test=5, k="3", cluster_std="0.5")
    assert data.n_classes == 3 and data.meta["cluster_std"] == 0.5


# --- every generated dataset ------------------------------------------------------------


@pytest.mark.parametrize("name", SEEDED)
def test_same_seed_gives_identical_tensors(name):
    assert_same(load_dataset(name, seed=3, **SMALL[name]), load_dataset(name, seed=3, **SMALL[name]))


@pytest.mark.parametrize("name", SEEDED)
def test_different_seed_gives_different_training_data(name):
    a, b = load_dataset(name, seed=1, **SMALL[name]), load_dataset(name, seed=2, **SMALL[name])
    assert not (torch.equal(a.X_train, b.X_train) and torch.equal(a.y_train, b.y_train))


@pytest.mark.parametrize("name", list(SMALL))
def test_shapes_dtypes_and_meta(name):
    data = load_dataset(name, seed=0, **SMALL[name])
    assert (data.n_train, data.n_test) == (60, 30)
    assert data.X_train.dtype == data.X_test.dtype == torch.float32
    assert data.X_train.shape[1:] == data.X_test.shape[1:]
    assert data.input_dim == math.prod(data.X_train.shape[1:])
    if data.task == "classification":
        assert data.y_train.dtype == torch.int64
        assert int(data.y_train.min()) >= 0 and int(data.y_train.max()) < data.n_classes
    else:
        assert data.n_classes is None and data.y_train.dtype == torch.float32
    assert data.meta["dataset"] == name and data.meta["seed"] == 0
    assert (data.meta["n_train"], data.meta["n_test"]) == (60, 30)
    json.dumps(data.meta)  # provenance must be storable


@pytest.mark.parametrize(
    "name, feature_shape, n_classes",
    [
        ("blobs", (2,), 2),
        ("moons", (2,), 2),
        ("spirals", (2,), 2),
        ("digits", (64,), 10),
        ("doppler", (1,), None),
        ("piecewise", (1,), None),
        ("patterns", (256,), None),
    ],
)
def test_feature_shapes_and_classes(name, feature_shape, n_classes):
    data = load_dataset(name, **SMALL[name])
    assert data.feature_shape == feature_shape and data.n_classes == n_classes


def test_default_sizes():
    assert (load_dataset("blobs").n_train, load_dataset("blobs").n_test) == (1000, 1000)
    digits = load_dataset("digits")
    assert (digits.n_train, digits.n_test) == (1257, 540)


def test_blobs_options_and_independent_test_stream():
    data = load_dataset("blobs", k=4, d=7, n_train=400, n_test=10, cluster_std=0.1, seed=5)
    assert data.feature_shape == (7,) and data.n_classes == 4
    assert torch.bincount(data.y_train).tolist() == [100] * 4  # balanced classes
    # Tight clusters: every point is nearest to its own class mean.
    means = torch.stack([data.X_train[data.y_train == c].mean(0) for c in range(4)])
    assert torch.equal(torch.cdist(data.X_train, means).argmin(1), data.y_train)
    # Asking for a different test size leaves the training set alone.
    assert torch.equal(load_dataset("blobs", k=4, d=7, n_train=400, n_test=500, cluster_std=0.1, seed=5).X_train,
                       data.X_train)


def test_spirals_have_one_class_per_arm_and_radius_at_most_one():
    data = load_dataset("spirals", arms=3, noise=0.0, n_train=300, n_test=3)
    assert data.n_classes == 3 and torch.bincount(data.y_train).tolist() == [100] * 3
    assert float(data.X_train.norm(dim=1).max()) <= 1.0 + 1e-6


def test_digits_are_scaled_to_unit_interval_and_split_by_seed():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert float(a.X_train.min()) == 0.0 and float(a.X_train.max()) == 1.0
    assert not torch.equal(a.y_test, b.y_test)
    # Prefixes of the seeded split, so a smaller request is a subset of the full one.
    small = load_dataset("digits", seed=0, n_train=100, n_test=20)
    assert torch.equal(small.X_train, a.X_train[:100]) and torch.equal(small.y_test, a.y_test[:20])
    with pytest.raises(DataError, match=r"n_train=2000 exceeds the 1257 training examples of 'digits'"):
        load_dataset("digits", n_train=2000)


def test_patterns_are_unit_norm_with_requested_targets():
    sign = load_dataset("patterns", d=32, n_train=200, n_test=5)
    assert torch.allclose(sign.X_train.norm(dim=1), torch.ones(200), atol=1e-5)
    assert set(sign.y_train.tolist()) == {-1.0, 1.0} and sign.task == "regression"
    gaussian = load_dataset("patterns", targets="gaussian", k=3, n_train=20, n_test=5)
    assert gaussian.y_train.shape == (20, 3) and gaussian.y_train.dtype == torch.float32
    classes = load_dataset("patterns", targets="classes", k=5, n_train=500, n_test=5)
    assert classes.n_classes == 5 and classes.y_train.dtype == torch.int64
    assert set(classes.y_train.tolist()) == set(range(5))


# --- mnist1d ----------------------------------------------------------------------------


def test_mnist1d_default_matches_the_paper_setup(mnist1d):
    assert (mnist1d.n_train, mnist1d.n_test) == (4000, 1000)
    assert mnist1d.feature_shape == (40,) and mnist1d.n_classes == 10
    assert mnist1d.X_train.dtype == torch.float32 and mnist1d.y_train.dtype == torch.int64
    counts = torch.bincount(mnist1d.y_train, minlength=10)
    assert int(counts.min()) > 350 and int(counts.max()) < 450  # roughly balanced
    assert mnist1d.meta["mnist1d_seed"] == 42 and mnist1d.meta["is_reference_pool"]


def test_mnist1d_is_deterministic_and_ignores_seed(mnist1d):
    assert_same(load_dataset("mnist1d", seed=7), mnist1d)


def test_mnist1d_smaller_requests_are_prefixes_of_the_reference_splits(mnist1d):
    small = load_dataset("mnist1d", n_train=300, n_test=100)
    assert torch.equal(small.X_train, mnist1d.X_train[:300])
    assert torch.equal(small.X_test, mnist1d.X_test[:100]) and torch.equal(small.y_test, mnist1d.y_test[:100])


def test_mnist1d_cache_hands_out_independent_tensors(mnist1d):
    first = load_dataset("mnist1d", n_train=10, n_test=10)
    first.X_train.zero_()
    assert torch.equal(load_dataset("mnist1d", n_train=10, n_test=10).X_train, mnist1d.X_train[:10])


def test_mnist1d_seed_changes_the_data_and_global_rng_is_untouched(mnist1d):
    np.random.seed(123)
    random.seed(123)
    expected_numpy, expected_python = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    other = load_dataset("mnist1d", mnist1d_seed=1, n_train=50, n_test=10)
    assert np.random.rand() == expected_numpy and random.random() == expected_python
    assert not torch.equal(other.X_train, mnist1d.X_train[:50])


# --- 1-D regression ---------------------------------------------------------------------


def test_doppler_formula_at_known_points():
    eps = 0.05
    for x in (0.1, 0.25, 0.5, 0.8):
        expected = math.sqrt(x * (1 - x)) * math.sin(2 * math.pi * (1 + eps) / (x + eps))
        assert doppler(x) == pytest.approx(expected, abs=1e-12)
    assert doppler(0.0) == pytest.approx(0.0) and doppler(1.0) == pytest.approx(0.0)
    # At x = 0.475 the sine's argument 2*pi*1.05/(x + 0.05) is exactly 4*pi.
    assert doppler(1.05 / 2 - 0.05) == pytest.approx(0.0, abs=1e-12)
    assert abs(doppler(np.linspace(0, 1, 1001))).max() <= 0.5


@pytest.mark.parametrize(
    "x, expected",
    [(0.0, 0.0), (0.1, 0.5), (0.2, 1.0), (0.3, 0.5), (0.4, 0.0), (0.55, 0.5), (0.6999999, 1.0), (0.7, -0.5), (1.0, -0.2)],
)
def test_piecewise_at_known_points(x, expected):
    assert piecewise(x) == pytest.approx(expected, abs=1e-5)


def test_target_functions_answer_in_kind():
    x = torch.linspace(0, 1, 11, dtype=torch.float64).reshape(-1, 1)
    for function in TARGET_FUNCTIONS.values():
        out = function(x)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (11, 1)
        assert np.allclose(out.numpy(), function(x.numpy()))


@pytest.mark.parametrize("name", ["doppler", "piecewise"])
def test_regression_datasets_noise_and_clean_grid_test_set(name):
    target = TARGET_FUNCTIONS[name]
    data = load_dataset(name, n_train=4000, n_test=101, noise_std=0.1, seed=4)
    assert data.X_train.shape == (4000, 1) and data.y_train.shape == (4000,)
    residual = data.y_train.double() - target(data.X_train[:, 0].double())
    assert abs(float(residual.std()) - 0.1) < 0.01 and abs(float(residual.mean())) < 0.01
    assert torch.allclose(data.X_test[:, 0], torch.linspace(0, 1, 101))
    assert torch.allclose(data.y_test, target(data.X_test[:, 0]), atol=1e-6)
    assert "clean" in data.meta["test_set"]
    grid = load_dataset(name, design="grid", noise_std=0.0, n_train=11, n_test=3)
    assert torch.allclose(grid.X_train[:, 0], torch.linspace(0, 1, 11))
    assert torch.allclose(grid.y_train, target(grid.X_train[:, 0]), atol=1e-6)


# --- the Dataset container ----------------------------------------------------------------


def test_subset_keeps_prefixes_and_checks_sizes():
    data = load_dataset("blobs", n_train=50, n_test=20)
    small = data.subset(n_train=10)
    assert (small.n_train, small.n_test) == (10, 20)
    assert torch.equal(small.X_train, data.X_train[:10]) and torch.equal(small.y_test, data.y_test)
    assert small.meta["n_train"] == 10 and data.meta["n_train"] == 50
    with pytest.raises(DataError, match=r"n_test=21 exceeds the 20 test examples of 'blobs'"):
        data.subset(n_test=21)


def test_to_casts_inputs_and_float_targets_only():
    classification = load_dataset("blobs", n_train=5, n_test=5).to(torch.float64)
    assert classification.X_train.dtype == torch.float64 and classification.y_train.dtype == torch.int64
    regression = load_dataset("doppler", n_train=5, n_test=5).to(torch.float64)
    assert regression.X_test.dtype == torch.float64 and regression.y_test.dtype == torch.float64
    with pytest.raises(DataError, match="floating dtype"):
        regression.to(torch.int32)


def test_dataset_rejects_mismatched_lengths_and_has_a_short_repr():
    with pytest.raises(DataError, match=r"X_train has 3 examples but y_train has 2"):
        Dataset("toy", torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64), torch.zeros(1, 2),
                torch.zeros(1, dtype=torch.int64), 2, {})
    data = Dataset("toy", torch.zeros(3, 2, 2), torch.zeros(3), torch.zeros(1, 2, 2), torch.zeros(1), None, {})
    assert data.input_dim == 4 and data.task == "regression"
    assert repr(data) == "Dataset(name='toy', n_train=3, n_test=1, feature_shape=(2, 2), regression)"
    json.dumps(data.summary())
