"""User data files: .npz, .csv and MNIST-format IDX."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from overparam.data import DataError, load_dataset, read_idx

# --- npz --------------------------------------------------------------------------------


def test_npz_with_stored_split_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "X_train": rng.normal(size=(12, 3, 2)),
        "y_train": rng.integers(0, 4, size=12),
        "X_test": rng.normal(size=(5, 3, 2)),
        "y_test": np.array([0, 1, 2, 3, 4]),
    }
    np.savez(tmp_path / "toy.npz", **arrays)
    data = load_dataset("npz", path=tmp_path / "toy.npz")
    assert data.feature_shape == (3, 2) and data.input_dim == 6
    assert data.X_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert np.allclose(data.X_train.numpy(), arrays["X_train"]) and np.array_equal(data.y_test.numpy(), arrays["y_test"])
    assert data.n_classes == 5  # largest label + 1
    assert data.meta["split"] == "as stored in the file"
    json.dumps(data.meta)


def test_npz_pool_is_split_by_seeded_shuffle(tmp_path):
    X = np.arange(100, dtype=np.float64).reshape(50, 2)
    y = np.arange(50) % 3
    np.savez(tmp_path / "pool.npz", X=X, y=y)
    a = load_dataset("npz", path=tmp_path / "pool.npz", seed=1)
    assert (a.n_train, a.n_test) == (40, 10)  # test_fraction 0.2
    rows = sorted(a.X_train[:, 0].tolist() + a.X_test[:, 0].tolist())
    assert rows == X[:, 0].tolist()  # a partition of the file's rows
    assert torch.equal(a.y_train, (a.X_train[:, 0] / 2).long() % 3)  # labels stay with their rows
    assert torch.equal(load_dataset("npz", path=tmp_path / "pool.npz", seed=1).X_test, a.X_test)
    assert not torch.equal(load_dataset("npz", path=tmp_path / "pool.npz", seed=2).X_test, a.X_test)
    b = load_dataset("npz", path=tmp_path / "pool.npz", seed=1, test_fraction=0.5, n_train=7)
    assert (b.n_train, b.n_test) == (7, 25)


def test_npz_float_targets_mean_regression_and_file_can_be_the_name(tmp_path):
    file = tmp_path / "curve.npz"
    np.savez(file, X=np.linspace(0, 1, 20), y=np.linspace(0, 1, 20) ** 2)
    data = load_dataset(str(file))
    assert data.task == "regression" and data.feature_shape == (1,) and data.y_train.dtype == torch.float32
    assert torch.allclose(data.y_train, data.X_train[:, 0] ** 2)
    with pytest.raises(DataError, match="classification labels must be whole numbers"):
        load_dataset(str(file), task="classification")


def test_npz_found_through_data_dir(tmp_path):
    np.savez(tmp_path / "only.npz", X=np.zeros((10, 2)), y=np.arange(10) % 2)
    assert load_dataset("npz", data_dir=tmp_path).n_train == 8
    assert load_dataset("npz", data_dir=tmp_path, path="only.npz").n_train == 8
    np.savez(tmp_path / "second.npz", X=np.zeros((10, 2)), y=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"2 \.npz files in .*; pass path=<file\.npz> to choose one"):
        load_dataset("npz", data_dir=tmp_path)


def test_npz_problems_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*missing\.npz"):
        load_dataset("npz", path=tmp_path / "missing.npz")
    with pytest.raises(DataError, match=r"needs path=<file\.npz> or data_dir=<folder>"):
        load_dataset("npz")
    np.savez(tmp_path / "keys.npz", inputs=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"has keys \[inputs\]; expected X_train, y_train, X_test, y_test or X, y"):
        load_dataset("npz", path=tmp_path / "keys.npz")
    np.savez(tmp_path / "lengths.npz", X=np.zeros((3, 2)), y=np.zeros(4, dtype=int))
    with pytest.raises(DataError, match=r"X has shape \(3, 2\) but y has shape \(4,\); lengths must match"):
        load_dataset("npz", path=tmp_path / "lengths.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"cannot read npz file"):
        load_dataset("npz", path=tmp_path / "junk.npz")
    np.savez(tmp_path / "objects.npz", X=np.zeros((2, 1)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match=r"cannot read npz file"):  # never unpickled
        load_dataset("npz", path=tmp_path / "objects.npz")


# --- csv --------------------------------------------------------------------------------


def test_csv_with_header_and_text_labels(tmp_path):
    lines = ["sepal,petal,species"] + [f"{i}.5,{i % 4},{['setosa', 'virginica'][i % 2]}" for i in range(20)]
    (tmp_path / "iris.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset("csv", path=tmp_path / "iris.csv", seed=3)
    assert (data.n_train, data.n_test) == (16, 4) and data.feature_shape == (2,)
    assert data.n_classes == 2 and data.meta["label_values"] == ["setosa", "virginica"]
    assert data.meta["columns"] == ["sepal", "petal", "species"]
    # Row i has first feature i + 0.5 and label i % 2.
    assert torch.equal(data.y_train, (data.X_train[:, 0] - 0.5).long() % 2)
    by_name = load_dataset("csv", path=tmp_path / "iris.csv", seed=3, label_column="species")
    assert torch.equal(by_name.X_train, data.X_train)


def test_csv_without_header_label_column_and_regression(tmp_path):
    (tmp_path / "plain.csv").write_text("".join(f"{i % 3},{i},{2 * i}\n" for i in range(10)))
    data = load_dataset("csv", path=tmp_path / "plain.csv", label_column=0, test_fraction=0.3)
    assert "columns" not in data.meta and (data.n_train, data.n_test) == (7, 3)
    assert data.n_classes == 3 and torch.equal(data.y_train, data.X_train[:, 0].long() % 3)
    assert torch.equal(data.X_train[:, 1], 2 * data.X_train[:, 0])
    (tmp_path / "reg.csv").write_text("".join(f"{i},{i / 4}\n" for i in range(10)))
    regression = load_dataset("csv", path=tmp_path / "reg.csv")
    assert regression.task == "regression" and torch.allclose(regression.y_train, regression.X_train[:, 0] / 4)
    forced = load_dataset("csv", path=tmp_path / "plain.csv", task="regression")
    assert forced.task == "regression"


def test_csv_problems_raise_data_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2,0\n3,x,1\n")
    with pytest.raises(DataError, match=r"line 2 column 2: 'x' is not a number"):
        load_dataset("csv", path=tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2,0\n3,1\n")
    with pytest.raises(DataError, match=r"line 2 has 2 columns, expected 3"):
        load_dataset("csv", path=tmp_path / "ragged.csv")
    (tmp_path / "ok.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n")
    with pytest.raises(DataError, match=r"label_column 'kind' not in the header .*; columns: a, b, label"):
        load_dataset("csv", path=tmp_path / "ok.csv", label_column="kind")
    with pytest.raises(DataError, match=r"label_column must be an integer in \[-3, 2\], got 5"):
        load_dataset("csv", path=tmp_path / "ok.csv", label_column=5)
    with pytest.raises(DataError, match=r"data file not found: .*nope\.csv"):
        load_dataset(str(tmp_path / "nope.csv"))


# --- IDX ----------------------------------------------------------------------------------

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(values: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=5, n_test=3, gzipped=False, seed=0):
    rng = np.random.default_rng(seed)
    parts = {
        NAMES[0]: (rng.integers(0, 256, size=(n_train, 28, 28)), IMAGES_MAGIC),
        NAMES[1]: (rng.integers(0, 10, size=n_train), LABELS_MAGIC),
        NAMES[2]: (rng.integers(0, 256, size=(n_test, 28, 28)), IMAGES_MAGIC),
        NAMES[3]: (rng.integers(0, 10, size=n_test), LABELS_MAGIC),
    }
    for name, (values, magic) in parts.items():
        raw = idx_bytes(values, magic)
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return {name: values for name, (values, _) in parts.items()}


@pytest.mark.parametrize("gzipped", [False, True])
def test_mnist_idx_files_load_scaled_and_flattened(tmp_path, gzipped):
    written = write_mnist(tmp_path, gzipped=gzipped)
    data = load_dataset("mnist", data_dir=tmp_path)
    assert (data.n_train, data.n_test) == (5, 3) and data.feature_shape == (784,)
    assert np.allclose(data.X_train.numpy(), written[NAMES[0]].reshape(5, 784) / 255.0)
    assert np.array_equal(data.y_test.numpy(), written[NAMES[3]]) and data.y_test.dtype == torch.int64
    assert float(data.X_train.min()) >= 0.0 and float(data.X_train.max()) <= 1.0
    labels = np.concatenate([written[NAMES[1]], written[NAMES[3]]])
    assert data.n_classes == labels.max() + 1
    json.dumps(data.meta)


def test_mnist_options_sizes_and_unflattened_shape(tmp_path):
    write_mnist(tmp_path)
    data = load_dataset("mnist", data_dir=tmp_path, n_train=2, n_test=1, flatten=False, n_classes=10)
    assert data.X_train.shape == (2, 1, 28, 28) and data.n_classes == 10
    with pytest.raises(DataError, match=r"n_train=6 exceeds the 5 training examples of 'mnist'"):
        load_dataset("mnist", data_dir=tmp_path, n_train=6)


def test_mnist_corrupted_magic_number(tmp_path):
    write_mnist(tmp_path)
    raw = bytearray((tmp_path / NAMES[0]).read_bytes())
    raw[2] = 0x42  # not an IDX type code
    (tmp_path / NAMES[0]).write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: bad IDX magic number 0x00004203"):
        load_dataset("mnist", data_dir=tmp_path)
    raw[2] = 0x08
    raw[3] = 0x01  # a valid IDX header, but for labels, not images
    (tmp_path / NAMES[0]).write_bytes(bytes(raw[:4]) + struct.pack(">I", 5 * 28 * 28) + bytes(raw[16:]))
    with pytest.raises(DataError, match=r"magic number 0x00000801, expected 0x00000803"):
        load_dataset("mnist", data_dir=tmp_path)


def test_mnist_missing_file_is_named(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / NAMES[3]).unlink()
    with pytest.raises(DataError, match=r"data file not found: .*t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"data directory not found"):
        load_dataset("mnist", data_dir=tmp_path / "elsewhere")


def test_mnist_malformed_files(tmp_path):
    write_mnist(tmp_path)
    raw = (tmp_path / NAMES[0]).read_bytes()
    (tmp_path / NAMES[0]).write_bytes(raw[:-10])
    with pytest.raises(DataError, match=r"IDX header gives dimensions \[5, 28, 28\] \(3920 bytes of data\) but the file holds 3910"):
        load_dataset("mnist", data_dir=tmp_path)
    write_mnist(tmp_path, n_train=5)
    (tmp_path / NAMES[1]).write_bytes(idx_bytes(np.zeros(4), LABELS_MAGIC))
    with pytest.raises(DataError, match=r"holds 5 images but train-labels-idx1-ubyte holds 4 labels"):
        load_dataset("mnist", data_dir=tmp_path)
    write_mnist(tmp_path)
    (tmp_path / NAMES[2]).unlink()
    (tmp_path / f"{NAMES[2]}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"cannot read .*t10k-images-idx3-ubyte\.gz"):
        load_dataset("mnist", data_dir=tmp_path)


def test_read_idx_handles_other_types(tmp_path):
    values = (np.arange(6).reshape(2, 3) - 3).astype(">i4")  # big-endian, as IDX stores it
    (tmp_path / "ints.idx").write_bytes(struct.pack(">I", 0x00000C02) + struct.pack(">2I", 2, 3) + values.tobytes())
    out = read_idx(tmp_path / "ints.idx")
    assert out.dtype == np.int32 and np.array_equal(out, values)
