"""`overparam measure sharpness|interpolate|landscape|generalization` end to end in subprocesses: a user's model
file + state_dicts + npz; the printed JSON numbers equal calling the Python instruments directly; the landscape
figure is written; bad inputs give one line on stderr and exit status 2."""

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from overparam.measure import generalization_measures, interpolate, landscape, sharpness

MODEL_PY = """
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))

def other():
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 3))

def normed():
    return nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))

def regressor():
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
"""


def _fit(model, X, y, seed, steps=200):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 2e-2)
    loss = torch.nn.functional.cross_entropy if not torch.is_floating_point(y) else torch.nn.functional.mse_loss
    for _ in range(steps):
        opt.zero_grad()
        loss(model(X), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    (d / "mynet.py").write_text(MODEL_PY)
    ns = {}
    exec(MODEL_PY, ns)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    np.savez(d / "data.npz", X=X, y=y)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    models = {}
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        init = ns["build"]()
        torch.save(init.state_dict(), d / f"init_{name}.pt")
        models[name] = _fit(ns["build"](), Xt, yt, seed)
        torch.save(models[name].state_dict(), d / f"{name}.pt")
        models[f"init_{name}"] = init
    # regression data and a regressor
    yr = np.sin(X[:, :1]).astype(np.float32)
    np.savez(d / "reg.npz", X=X, y=yr)
    torch.manual_seed(2)
    reg = _fit(ns["regressor"](), Xt, torch.as_tensor(yr), 2)
    torch.save(reg.state_dict(), d / "reg.pt")
    models["reg"] = reg
    torch.save(ns["other"]().state_dict(), d / "other.pt")
    return d, models, Xt, yt, torch.as_tensor(yr)


def _cli(*args):
    out = run_cli("measure", *args)
    assert out.returncode == 0, out.stderr
    return out


def _json(*args):
    return json.loads(_cli(*args, "--json").stdout)


def _close(a, b, rtol=1e-7):
    a = np.asarray([np.nan if v is None else v for v in np.ravel(a)] if np.ndim(a) else [a], dtype=float)
    b = np.asarray(b, dtype=float).ravel()
    assert a.shape == b.shape
    assert np.allclose(a, b, rtol=rtol, atol=1e-12, equal_nan=True), (a, b)


def test_sharpness_json_equals_python(user):
    d, models, X, y, _ = user
    doc = _json("sharpness", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "a.pt"),
                "--data", str(d / "data.npz"), "--eps", "1e-3", "--maxiter", "30", "--seed", "3")
    ref = sharpness(models["a"], "cross_entropy", (X, y), eps=1e-3, maxiter=30, seed=3, num_threads=1)
    assert doc["n_params"] == ref.n_params == 59 and doc["n_examples"] == 40
    for key in ("sharpness", "loss", "max_loss", "top_eigenvalue", "delta_norm"):
        _close(doc[key], getattr(ref, key))
    _close(doc["pacbayes"]["sigma"], ref.pacbayes.sigma)
    assert doc["sharpness"] > 0 and doc["subspace"] is None
    # a random subspace, no Hessian or PAC-Bayes, text output
    out = _cli("sharpness", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "a.pt"),
               "--data", str(d / "data.npz"), "--subspace", "5", "--no-hessian", "--no-pacbayes")
    assert "random 5-dimensional subspace" in out.stdout and "Keskar sharpness" in out.stdout
    assert "Hessian" not in out.stdout


def test_sharpness_mse_on_real_targets(user):
    d, models, X, _, yr = user
    doc = _json("sharpness", "--model", f"{d / 'mynet.py'}:regressor", "--weights", str(d / "reg.pt"),
                "--data", str(d / "reg.npz"), "--loss", "mse", "--maxiter", "20", "--no-pacbayes")
    ref = sharpness(models["reg"], "mse", (X, yr), maxiter=20, pacbayes=False, num_threads=1)
    _close(doc["sharpness"], ref.sharpness)
    _close(doc["top_eigenvalue"], ref.top_eigenvalue)
    assert doc["pacbayes"] is None


def test_interpolate_json_equals_python_and_self_line_is_flat(user, tmp_path):
    d, models, X, y, _ = user
    fig = tmp_path / "line.png"
    doc = _json("interpolate", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "a.pt"),
                "--weights-b", str(d / "b.pt"), "--data", str(d / "data.npz"), "--steps", "6", "--extend", "0.2",
                "--out", str(fig))
    ref = interpolate(models["a"], models["b"], "cross_entropy", (X, y), steps=6, extend=0.2, num_threads=1)
    _close(doc["alphas"], ref.alphas)
    _close(doc["loss"], ref.loss)
    _close(doc["error"], ref.error)
    for key in ("loss_barrier", "error_barrier", "barrier_alpha", "distance"):
        _close(doc[key], getattr(ref, key))
    assert doc["loss_barrier"] > 0 and fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and doc["figure"] == str(fig)
    flat = _json("interpolate", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "a.pt"),
                 "--weights-b", str(d / "a.pt"), "--data", str(d / "data.npz"), "--steps", "5")
    assert flat["distance"] == 0 and abs(flat["loss_barrier"]) < 1e-12
    assert np.ptp(flat["loss"]) < 1e-12


def test_landscape_figure_and_grid_equal_python(user, tmp_path):
    d, models, X, y, _ = user
    fig = tmp_path / "land.png"
    doc = _json("landscape", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "a.pt"),
                "--data", str(d / "data.npz"), "--dims", "2", "--steps", "5", "--span", "0.5", "--seed", "4",
                "--out", str(fig))
    ref = landscape(models["a"], "cross_entropy", (X, y), dims=2, steps=5, span=0.5, seed=4, num_threads=1)
    assert np.shape(doc["loss"]) == (5, 5) and doc["figure"] == str(fig)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _close(doc["loss"], ref.loss)
    _close(doc["error"], ref.error)
    _close(doc["alphas"], ref.alphas)
    _close(doc["betas"], ref.betas)
    _close(doc["center_loss"], ref.center_loss)
    _close(doc["loss"][2][2], ref.center_loss)          # the grid's middle is the model itself
    _close(doc["direction_norms"], [np.linalg.norm(v) for v in ref.directions])
    out = _cli("landscape", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "a.pt"),
               "--data", str(d / "data.npz"), "--steps", "3", "--directions", "random")
    assert "1-D landscape (random directions" in out.stdout


def test_generalization_json_equals_python(user):
    d, models, X, y, _ = user
    doc = _json("generalization", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "a.pt"),
                "--init", str(d / "init_a.pt"), "--data", str(d / "data.npz"), "--samples", "4")
    ref = generalization_measures(models["a"], (X, y), init_model=models["init_a"],
                                  pacbayes_kw={"n_samples": 4, "seed": 0, "tolerance": 0.1}, num_threads=1)
    assert set(doc["measures"]) == set(ref.measures)
    for k, v in ref.measures.items():
        _close(doc["measures"][k], v)
    assert doc["n_layers"] == 2 and doc["n_examples"] == 40 and "fro_dist" in doc["measures"]
    _close(doc["fraction_fitted"], float((ref.margins > 0).mean()))


@pytest.mark.parametrize("case", ["b_other_factory", "b_missing", "out_folder", "not_mlp", "float_labels",
                                  "ce_on_real_targets", "subspace_too_big", "steps_one"])
def test_bad_inputs_give_one_line(user, tmp_path, case):
    d, *_ = user
    model, w, data = f"{d / 'mynet.py'}:build", str(d / "a.pt"), str(d / "data.npz")
    args = {
        "b_other_factory": ["interpolate", "--model", model, "--weights", w, "--weights-b", str(d / "other.pt"),
                            "--data", data],
        "b_missing": ["interpolate", "--model", model, "--weights", w, "--weights-b", str(d / "nope.pt"),
                      "--data", data],
        "out_folder": ["landscape", "--model", model, "--weights", w, "--data", data,
                       "--out", str(tmp_path / "no" / "such" / "x.png")],
        "not_mlp": ["generalization", "--model", f"{d / 'mynet.py'}:normed", "--random-init", "--data", data],
        "float_labels": ["generalization", "--model", f"{d / 'mynet.py'}:regressor", "--random-init",
                         "--data", str(d / "reg.npz"), "--loss", "mse"],
        "ce_on_real_targets": ["sharpness", "--model", f"{d / 'mynet.py'}:regressor", "--random-init",
                               "--data", str(d / "reg.npz")],
        "subspace_too_big": ["sharpness", "--model", model, "--weights", w, "--data", data, "--subspace", "1000"],
        "steps_one": ["interpolate", "--model", model, "--weights", w, "--weights-b", w, "--data", data,
                      "--steps", "1"],
    }[case]
    needle = {"b_other_factory": "do not fit", "b_missing": "not found", "out_folder": "--out", "not_mlp": "Linear",
              "float_labels": "integer class labels", "ce_on_real_targets": "cross_entropy",
              "subspace_too_big": "--subspace", "steps_one": "--steps"}[case]
    out = run_cli("measure", *args)
    assert out.returncode == 2, (case, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert needle in out.stderr, out.stderr
    assert out.stdout == ""
