"""A data_dir given is a data_dir read: a missing folder, or one no dataset of the run reads, is refused before
anything is written, from the CLI and from Python alike; random-features reads MNIST IDX files from it."""

import io
import json
from contextlib import redirect_stderr, redirect_stdout

from pathlib import Path

import pytest

from overparam.cli import main
from overparam.config import ConfigError
from overparam.studies import REGISTRY
from test_data_files import write_mnist

DATA_STUDIES = sorted(name for name, s in REGISTRY.items() if "data_dir" in s.config.__dataclass_fields__)


def _cli(*argv, store):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--store", str(store), *argv])
    return code, out.getvalue(), err.getvalue()


def test_every_study_with_a_data_dir_is_covered():
    assert len(DATA_STUDIES) >= 10 and {"lottery-ticket", "double-descent", "gd-vs-sgd", "random-features"} <= set(
        DATA_STUDIES)


@pytest.mark.parametrize("name", DATA_STUDIES)
def test_missing_data_dir_is_refused_everywhere(tmp_path, name):
    store = tmp_path / "runs"
    code, out, err = _cli("run", name, "--data-dir", str(tmp_path / "nowhere"), store=store)
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert "data_dir: folder not found" in err and "nowhere" in err
    assert not store.exists()
    with pytest.raises(ConfigError, match="data_dir: folder not found"):   # the same rule from Python
        REGISTRY[name].config(data_dir=str(tmp_path / "nowhere"))


@pytest.mark.parametrize("name", ["double-descent", "lottery-ticket", "gd-vs-sgd"])
def test_a_data_dir_no_dataset_reads_is_refused(tmp_path, name):
    write_mnist(tmp_path)
    code, out, err = _cli("run", name, "--data-dir", str(tmp_path), store=tmp_path / "runs")
    assert code == 2 and "data_dir: only dataset mnist reads files" in err and out == ""
    assert not (tmp_path / "runs").exists()


def test_mnist_folder_without_its_files_names_the_file(tmp_path):
    code, _, err = _cli("run", "double-descent", "--set", "dataset=mnist", "--data-dir", str(tmp_path),
                        store=tmp_path / "runs")
    assert code == 2 and "train-images-idx3-ubyte" in err


def test_random_features_reads_mnist_idx_files(tmp_path):
    """The pre-check follows `datasets` (not the npz loader), and the run trains on the IDX files' images."""
    data = tmp_path / "mnist"
    data.mkdir()
    write_mnist(data, n_train=60, n_test=20)
    store = tmp_path / "runs"
    code, out, err = _cli("run", "random-features", "--set", "datasets=mnist", "--data-dir", str(data),
                          "--set", "n_train=40", "--set", "ratios=0.5,1,2", "--set", "feature_seeds=1",
                          "--set", "features=relu", "--json", "--quiet", store=store)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "done", doc
    config = json.loads((Path(doc["dir"]) / "results.json").read_text())["config"]
    assert config["datasets"] == ["mnist"] and config["data_dir"] == str(data)
    assert (Path(doc["dir"]) / "arrays.npz").is_file()


@pytest.mark.parametrize("bad", ["X", "y"])
def test_user_files_with_nan_are_refused_by_the_data_layer(tmp_path, bad):
    import numpy as np

    from overparam.data import DataError, load_dataset

    X, y = np.random.default_rng(0).standard_normal((20, 3)), np.linspace(0, 1, 20)
    (X if bad == "X" else y)[4] = np.nan
    np.savez(tmp_path / "d.npz", X=X, y=y)
    with pytest.raises(DataError, match="NaN or inf"):
        load_dataset("npz", path=tmp_path / "d.npz")
