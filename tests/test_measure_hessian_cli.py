"""`overparam measure hessian` end to end in subprocesses: a user's model file + state_dict + npz; the printed
eigenvalues equal the dense ones; a malicious checkpoint is refused without running; bad inputs give one line."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from conftest import run_cli

MODEL_PY = """
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 4))

def wide():
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4))

def not_a_module():
    return 42
"""


class Evil:
    """A checkpoint that runs a shell command when unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    (d / "mynet.py").write_text(MODEL_PY)
    ns = {}
    exec(MODEL_PY, ns)
    torch.manual_seed(0)
    model = ns["build"]()
    torch.save(model.state_dict(), d / "net.pt")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    np.savez(d / "data.npz", X=X, y=y)
    return d, model, X, y


def exact_eigs(model, X, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    Xt, yt = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y).long()
    model = model.double()

    def f(flat):
        ps = [t.view(s) for t, s in zip(torch.split(flat, sizes), shapes)]
        return nn.functional.cross_entropy(functional_call(model, dict(zip(names, ps)), (Xt,)), yt)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.linalg.eigvalsh(hessian(f)(theta)).numpy()


def test_json_eigenvalues_match_dense(user_files):
    d, model, X, y = user_files
    out = run_cli("measure", "hessian", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "net.pt"),
                  "--data", str(d / "data.npz"), "--k", "5", "--which", "both", "--density", "--trace", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    ev = exact_eigs(model, X, y)
    ref = np.concatenate([ev[::-1][:3], ev[:2][::-1]])
    assert doc["n_params"] == len(ev) == 60 and doc["n_examples"] == 50
    assert np.allclose(doc["eigenvalues"], ref, atol=1e-9 * np.abs(ev).max())
    assert doc["n_matvecs"] > 0 and doc["converged"]
    assert abs(doc["trace"]["estimate"] - ev.sum()) < 0.5 * np.abs(ev).sum()
    assert abs(sum(doc["density"]["weights"]) - 1) < 1e-9
    text = run_cli("measure", "hessian", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "net.pt"),
                   "--data", str(d / "data.npz"), "--k", "3", "--n", "20")
    assert text.returncode == 0, text.stderr
    assert "largest 3 eigenvalues" in text.stdout and "20 examples" in text.stdout


def test_malicious_checkpoint_refused_and_not_run(user_files, tmp_path):
    d, *_ = user_files
    for kind in ("raw_pickle", "torch_save"):
        marker = tmp_path / f"pwned_{kind}"
        evil = tmp_path / f"evil_{kind}.pt"
        if kind == "raw_pickle":
            evil.write_bytes(pickle.dumps(Evil(marker)))
        else:
            torch.save({"state_dict": Evil(marker)}, evil)
        out = run_cli("measure", "hessian", "--model", f"{d / 'mynet.py'}:build", "--weights", str(evil),
                      "--data", str(d / "data.npz"))
        assert out.returncode == 2, (out.stdout, out.stderr)
        assert not marker.exists(), "the checkpoint ran code"
        assert "refusing" in out.stderr or "weights" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("case", ["no_weights_file", "bad_factory", "shape", "no_data"])
def test_bad_inputs_give_one_line(user_files, case):
    d, *_ = user_files
    model, weights, data = f"{d / 'mynet.py'}:build", str(d / "net.pt"), str(d / "data.npz")
    if case == "no_weights_file":
        weights = str(d / "missing.pt")
    elif case == "no_model_file":
        model = f"{d / 'nope.py'}:build"
    elif case == "bad_factory":
        model = f"{d / 'mynet.py'}:nothing"
    elif case == "not_module":
        model = f"{d / 'mynet.py'}:not_a_module"
    elif case == "shape":
        model, weights = f"{d / 'mynet.py'}:wide", None
    elif case == "bad_spec":
        model = "justaname"
    elif case == "no_data":
        data = str(d / "missing.npz")
    args = ["measure", "hessian", "--model", model, "--data", data] + (["--weights", weights] if weights
                                                                       else ["--random-init"])
    out = run_cli(*args)
    assert out.returncode == 2, (case, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    needle = {"no_weights_file": "weights file not found", "bad_factory": "no callable 'nothing'",
              "shape": "cannot take inputs of shape", "no_data": "data file not found"}[case]
    assert needle in out.stderr, out.stderr
