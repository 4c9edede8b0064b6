"""`overparam measure` checks what it is given before any work: model specs (with literal arguments), factories
that raise or exit, checkpoints of the wrong kind, data that are not finite real numbers, missing --weights,
and memory; and LAPACK's messages never reach the terminal."""

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch
from torch import nn

from overparam.cli import main
from overparam.commands.native_output import native_noise_filtered
from overparam.config import MEMORY_ENV
from overparam.usermodel import UserModelError, build_model, check_forward, load_arrays, load_state_dict, parse_spec

MODEL_PY = """
import sys
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4))

def sized(classes, hidden=6):
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, classes))

def broken():
    raise ValueError("cannot build")

def exits():
    sys.exit(3)

class Log(nn.Module):
    def forward(self, x):
        return torch.log(x - 100.0)

def nan_out():
    return nn.Sequential(nn.Linear(3, 4), Log())

def normed():
    return nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 4))
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    (d / "mynet.py").write_text(MODEL_PY)
    (d / "exits.py").write_text("import sys\nsys.exit(0)\n")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4))
    torch.save(model.state_dict(), d / "net.pt")
    torch.save(model, d / "whole.pt")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3)).astype(np.float32)
    y = rng.integers(0, 4, 30)
    np.savez(d / "data.npz", X=X, y=y)
    return d, X, y


def cli(*argv, env=None, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["measure", *map(str, argv)])
    return code, out.getvalue(), err.getvalue()


def one_line_error(code, out, err, needle):
    assert code == 2 and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1 and needle in err and "\x1b" not in err, err


# ---------------------------------------------------------------- model specs and factories

def test_spec_arguments_are_literals_never_code():
    assert parse_spec("net.py:build") == ("net.py", "build", (), {})
    assert parse_spec("pkg.nets:make(10, name='x', sizes=[1, 2])") == ("pkg.nets", "make", (10,),
                                                                       {"name": "x", "sizes": [1, 2]})
    for bad in ("net.py:build(x=os.system('true'))", "net.py:build(**opts)", "net.py:build(", "justaname",
                "net.py:", ":build", "net.py:build(__import__('os'))"):
        with pytest.raises(UserModelError) as err:
            parse_spec(bad)
        assert "\n" not in str(err.value)


def test_factory_arguments_from_the_spec(user):
    d, *_ = user
    model = build_model(f"{d / 'mynet.py'}:sized(classes=3, hidden=5)")
    assert model[2].out_features == 3 and model[0].out_features == 5
    with pytest.raises(UserModelError, match=r"factory sized cannot be called with \(\).*missing a required "
                                             r"argument: 'classes'.*file.py:sized\(num_classes=10\)"):
        build_model(f"{d / 'mynet.py'}:sized")
    with pytest.raises(UserModelError, match="factory broken raised ValueError: cannot build"):
        build_model(f"{d / 'mynet.py'}:broken")
    with pytest.raises(UserModelError, match=r"factory exits called sys.exit\(3\)"):
        build_model(f"{d / 'mynet.py'}:exits")
    with pytest.raises(UserModelError, match=r"exits.py called sys.exit\(0\) while being imported"):
        build_model(f"{d / 'exits.py'}:build")


def test_a_model_file_that_exits_is_exit_2_not_0(user):
    d, *_ = user
    one_line_error(*cli("hessian", "--model", f"{d / 'exits.py'}:build", "--weights", d / "net.pt",
                        "--data", d / "data.npz"), "sys.exit(0)")


# ---------------------------------------------------------------- weights

def test_whole_model_checkpoint_gets_the_state_dict_hint(user):
    d, *_ = user
    with pytest.raises(UserModelError) as err:
        load_state_dict(d / "whole.pt")
    assert "save model.state_dict() instead" in str(err.value) and "\x1b" not in str(err.value)
    one_line_error(*cli("hessian", "--model", f"{d / 'mynet.py'}:build", "--weights", d / "whole.pt",
                        "--data", d / "data.npz"), "torch.save(model.state_dict(), path)")


def test_files_of_the_wrong_kind_say_what_they_are(user, tmp_path):
    d, X, y = user
    np.save(tmp_path / "w.npy", X)
    np.savez(tmp_path / "w.npz", X=X)
    (tmp_path / "w.pt").write_text("not a checkpoint")
    for name, needle in (("w.npy", "is a NumPy .npy array"), ("w.npz", "is a NumPy .npz archive"),
                         ("w.pt", "is not a file written by torch.save")):
        with pytest.raises(UserModelError, match=needle):
            load_state_dict(tmp_path / name)
    (tmp_path / "d.npz").write_text("text")
    for path, needle in ((tmp_path / "w.npy", "is a single .npy array; save inputs and targets together"),
                         (tmp_path / "d.npz", "is not an .npz archive"),
                         (d / "net.pt", "is a zip file but not an .npz archive")):
        with pytest.raises(UserModelError, match=needle):
            load_arrays(path)


def test_nan_weights_are_refused(user, tmp_path):
    d, *_ = user
    state = torch.load(d / "net.pt")
    state["2.bias"][1] = float("inf")
    torch.save(state, tmp_path / "inf.pt")
    one_line_error(*cli("sharpness", "--model", f"{d / 'mynet.py'}:build", "--weights", tmp_path / "inf.pt",
                        "--data", d / "data.npz"), "2.bias holds NaN or inf")


# ---------------------------------------------------------------- data

@pytest.mark.parametrize("case, needle", [
    ("nan", "X holds 1 NaN or inf values (the first at index (2, 1))"),
    ("complex", "X is complex (complex64); the instruments take real numbers"),
    ("strings", "X must hold numbers, not <U"),
    ("labels_text", "y must hold numbers"),
    ("huge", "X has values too large for float32"),
    ("rows", "X has 30 rows but y has 20"),
    ("scalar", "X is a single number"),
])
def test_data_are_finite_real_numbers(user, tmp_path, case, needle):
    _, X, y = user
    arrays = {"nan": dict(X=np.where(np.arange(90).reshape(30, 3) == 7, np.nan, X), y=y),
              "complex": dict(X=X + 1j, y=y), "strings": dict(X=X.astype(str), y=y),
              "labels_text": dict(X=X, y=y.astype(str)), "huge": dict(X=X.astype(np.float64) * 1e300, y=y),
              "rows": dict(X=X, y=y[:20]), "scalar": dict(X=np.float32(1), y=np.int64(0))}[case]
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserModelError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_arrays(tmp_path / "d.npz")


def test_nan_data_never_reach_a_solver(user, tmp_path, capfd):
    """NaN inputs used to print LAPACK/ARPACK noise and 'loss nan'; now one line, before any solver."""
    d, X, y = user
    np.savez(tmp_path / "nan.npz", X=np.where(np.arange(90).reshape(30, 3) == 7, np.nan, X), y=y)
    for inst in ("hessian", "ntk", "interpolate"):
        extra = ["--weights-b", d / "net.pt"] if inst == "interpolate" else []
        one_line_error(*cli(inst, "--model", f"{d / 'mynet.py'}:build", "--weights", d / "net.pt",
                            "--data", tmp_path / "nan.npz", *extra), "NaN or inf")
    assert "DLASCL" not in capfd.readouterr().out


def test_labels_out_of_range_and_model_outputs_that_are_not_finite(user, tmp_path):
    d, X, y = user
    np.savez(tmp_path / "high.npz", X=X, y=y + 4)
    one_line_error(*cli("landscape", "--model", f"{d / 'mynet.py'}:build", "--weights", d / "net.pt",
                        "--data", tmp_path / "high.npz"), "labels y must be 1-D in [0, 3]")
    one_line_error(*cli("hessian", "--model", f"{d / 'mynet.py'}:nan_out", "--random-init",
                        "--data", d / "data.npz"), "the model's output is NaN or inf on example 0")


def test_check_forward_leaves_batch_norm_statistics_alone(user):
    d, X, _ = user
    model = build_model(f"{d / 'mynet.py'}:normed")
    before = model[1].running_mean.clone()
    check_forward(model, torch.as_tensor(X) + 5)
    assert model.training and torch.equal(model[1].running_mean, before)


# ---------------------------------------------------------------- --weights, --random-init, memory

def test_weights_are_required_unless_random_init(user):
    d, *_ = user
    args = ("hessian", "--model", f"{d / 'mynet.py'}:build", "--data", d / "data.npz", "--k", "2", "--json")
    one_line_error(*cli(*args), "--weights FILE is missing")
    code, out, err = cli(*args, "--random-init")
    assert code == 0, err
    assert json.loads(out)["weights"] is None
    one_line_error(*cli(*args, "--random-init", "--weights", d / "net.pt"), "exclude each other")


def test_memory_limits(user, monkeypatch):
    d, *_ = user
    monkeypatch.setenv(MEMORY_ENV, str(1 << 30))
    good = ["--model", f"{d / 'mynet.py'}:build", "--weights", d / "net.pt", "--data", d / "data.npz"]
    one_line_error(*cli("ntk", *good, "--memory-gb", "0"), "expected a finite positive number, got 0")
    one_line_error(*cli("ntk", *good, "--memory-gb", "-1"), "expected a finite positive number, got -1")
    one_line_error(*cli("ntk", *good, "--memory-gb", "2"), "--memory-gb 2 needs about 2.0 GB of memory, more than the "
                                                           "1.0 GB available")
    one_line_error(*cli("landscape", *good, "--steps", "100000", "--dims", "2"),
                   "--steps 100000 with --dims 2 (1e+10 grid points) needs about 298.0 GB")
    one_line_error(*cli("interpolate", *good, "--weights-b", d / "net.pt", "--steps", str(10**12)), "--steps")


def test_native_solver_messages_are_filtered_and_the_rest_kept(capfd):
    A = np.ones((6, 6))
    A[0, 0] = np.nan
    with native_noise_filtered():
        print("kept on stdout", flush=True)
        with pytest.raises(np.linalg.LinAlgError):
            np.linalg.lstsq(A, np.ones(6), rcond=None)   # LAPACK prints '** On entry to DLASCL ...' from C
    captured = capfd.readouterr()
    assert "kept on stdout" in captured.out and "DLASCL" not in captured.out + captured.err
