"""The NTK instrument against the dense Jacobian product J Jᵀ on tiny models (float64)."""

import numpy as np
import pytest
import torch
from torch import nn

from overparam.measure.ntk import (
    fit_decay,
    gaussian_kernel,
    kernel_regression,
    kernel_spectrum,
    laplace_kernel,
    ntk_costs,
    ntk_eigs,
    ntk_gram,
    ntk_regression,
)
from overparam.models import MLP, seeded


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3)
        self.head = nn.Linear(3 * 6, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x.unsqueeze(1))).flatten(1))


def dense_jacobian(model, x, names=None):
    """(N, O, P) by torch.autograd.functional.jacobian over a flat vector of the chosen parameters."""
    named = dict(model.named_parameters())
    names = list(named) if names is None else names
    flat = torch.cat([named[n].detach().double().reshape(-1) for n in names])
    shapes = [named[n].shape for n in names]

    def f(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n] = theta[i:i + k].reshape(s)
            i += k
        rest = {n: p.detach().double() for n, p in named.items() if n not in params}
        return torch.func.functional_call(model, {**params, **rest}, (x.double(),))

    J = torch.autograd.functional.jacobian(f, flat)  # (N, O, P)
    return J


def dense_ntk(J1, J2, mode):
    full = torch.einsum("aop,bqp->abo q".replace(" ", ""), J1, J2)
    if mode == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    return diag if mode == "diagonal" else diag.sum(-1)


MODELS = {
    "mlp": (lambda: MLP(4, [6, 5], 3), (7, 4), (5, 4)),
    "cnn": (TinyCNN, (6, 8), (4, 8)),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mode", ["trace", "diagonal", "full"])
@pytest.mark.parametrize("method", ["jacobian", "ntk-vp", "auto"])
def test_matches_dense_jacobian_product(name, mode, method):
    build, s1, s2 = MODELS[name]
    model = seeded(build, seed=1)
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(*s1, generator=g), torch.randn(*s2, generator=g)
    J1, J2 = dense_jacobian(model, x1), dense_jacobian(model, x2)
    sym = ntk_gram(model, x1, mode=mode, method=method, dtype=torch.float64)
    cross = ntk_gram(model, x1, x2, mode=mode, method=method, dtype=torch.float64, block=3)
    assert sym.gram.dtype == torch.float64
    torch.testing.assert_close(sym.gram, dense_ntk(J1, J1, mode), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cross.gram, dense_ntk(J1, J2, mode), rtol=1e-10, atol=1e-12)
    assert sym.method in ("jacobian", "ntk-vp") and sym.n_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("method", ["jacobian", "ntk-vp"])
@pytest.mark.parametrize("mode", ["trace", "full"])
def test_symmetric_psd_and_blocking_invariant(method, mode):
    model = seeded(lambda: MLP(5, [8], 4, activation="tanh"), seed=3)
    x = torch.randn(11, 5, generator=torch.Generator().manual_seed(4))
    whole = ntk_gram(model, x, mode=mode, method=method, dtype=torch.float64, block=11)
    assert whole.blocks == 1
    for block in (1, 3, 4):
        part = ntk_gram(model, x, mode=mode, method=method, dtype=torch.float64, block=block)
        assert part.blocks == sum(range(1, -(-11 // block) + 1))  # upper block triangle only
        torch.testing.assert_close(part.gram, whole.gram, rtol=1e-12, atol=1e-12)
    M = whole.matrix()
    assert torch.equal(M, M.T)
    assert torch.linalg.eigvalsh(M).min() > -1e-10 * torch.linalg.eigvalsh(M).max()
    # cross-kernel blocking, rectangular
    y = torch.randn(6, 5, generator=torch.Generator().manual_seed(5))
    a = ntk_gram(model, x, y, mode=mode, method=method, dtype=torch.float64, block=2).gram
    b = ntk_gram(model, x, y, mode=mode, method=method, dtype=torch.float64, block=20).gram
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_parameter_subset_and_fixed_rest():
    model = seeded(lambda: MLP(4, [6, 5], 3), seed=6)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(7))
    names = ["net.2.weight", "net.4.bias"]
    J = dense_jacobian(model, x, names)
    for method in ("jacobian", "ntk-vp"):
        res = ntk_gram(model, x, mode="full", method=method, params=names, dtype=torch.float64)
        torch.testing.assert_close(res.gram, dense_ntk(J, J, "full"), rtol=1e-10, atol=1e-12)
        assert res.n_params == 5 * 6 + 3
    with pytest.raises(ValueError, match="unknown parameter"):
        ntk_gram(model, x, params=["nope"])


def test_float32_default_and_float64_option_agree_and_model_untouched():
    model = seeded(lambda: MLP(4, [16], 2), seed=8)
    before = [p.clone() for p in model.parameters()]
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(9))
    k32 = ntk_gram(model, x).gram
    k64 = ntk_gram(model, x, dtype=torch.float64).gram
    assert k32.dtype == torch.float32 and k64.dtype == torch.float64
    torch.testing.assert_close(k32.double(), k64, rtol=1e-4, atol=1e-5)
    assert all(p.dtype == torch.float32 and torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_accepts_dataloader_and_bad_arguments():
    model = seeded(lambda: MLP(3, [4], 2), seed=0)
    X, y = torch.randn(10, 3), torch.zeros(10)
    a = ntk_gram(model, (X, y), dtype=torch.float64).gram
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4)
    torch.testing.assert_close(ntk_gram(model, dl, dtype=torch.float64).gram, a)
    with pytest.raises(ValueError, match="mode"):
        ntk_gram(model, X, mode="diag")
    with pytest.raises(ValueError, match="method"):
        ntk_gram(model, X, method="fast")
    with pytest.raises(ValueError, match="block"):
        ntk_gram(model, X, block=0)


def test_auto_rule_follows_cost_formulas():
    from overparam.measure.ntk import NTK_VP_EFFICIENCY

    c = ntk_costs(100, 100, 10, 1000, fp=2000.0, mode="trace")
    assert c["jacobian"] == 200 * 10 * 2000 + 2 * 100 * 100 * 10 * 1000
    assert c["ntk-vp"] == 100 * 10 * 2000 + 100 * 100 * 10 * 2000
    assert c["choice"] == "jacobian"
    full = ntk_costs(100, 100, 10, 1000, fp=2000.0, mode="full")
    assert full["choice"] == ("ntk-vp" if NTK_VP_EFFICIENCY * full["ntk-vp"] < full["jacobian"] else "jacobian")
    wide = ntk_costs(100, 100, 100, 1000, fp=2000.0, mode="full")  # O = 100 outputs: ntk-vp
    assert wide["choice"] == "ntk-vp"
    model = seeded(lambda: MLP(4, [32], 100), seed=0)
    x = torch.randn(8, 4)
    assert ntk_gram(model, x, mode="trace").method == "jacobian"
    assert ntk_gram(model, x, mode="full").method == "ntk-vp"


def test_fit_decay_recognizes_power_and_exponential():
    i = np.arange(1, 201, dtype=float)
    p = fit_decay(3.0 * i ** -2.5)
    assert p.better == "power" and abs(p.power_exponent - 2.5) < 1e-9 and p.power_r2 > 0.999999
    e = fit_decay(np.exp(-0.1 * i), last=150)
    assert e.better == "exponential" and abs(e.exp_rate - 0.1) < 1e-9
    with pytest.raises(ValueError):
        fit_decay([1.0, 0.5])


def test_eigs_match_numpy_and_kernel_baselines():
    model = seeded(lambda: MLP(3, [32], 1), seed=2)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(3))
    spec = ntk_eigs(model, x, vectors=True)
    K = spec.ntk.gram.numpy()
    np.testing.assert_allclose(spec.eigenvalues, np.sort(np.linalg.eigvalsh(K))[::-1], rtol=1e-9, atol=1e-9)
    v = spec.eigenvectors[:, 0]
    np.testing.assert_allclose(K @ v, spec.eigenvalues[0] * v, rtol=1e-8, atol=1e-8)
    # closed-form kernels: values and decay character (Gaussian decays faster than Laplace)
    L, G = laplace_kernel(x, bandwidth=2.0), gaussian_kernel(x, bandwidth=2.0)
    d = torch.cdist(x.double(), x.double())
    torch.testing.assert_close(L, torch.exp(-d / 2.0))
    torch.testing.assert_close(G, torch.exp(-d ** 2 / 8.0))
    sl, sg = kernel_spectrum(L, fit=(2, 20)), kernel_spectrum(G, fit=(2, 20))
    assert sg.normalized()[19] < sl.normalized()[19]


def test_kernel_regression_interpolates_and_ntk_regression_fits_training_set():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=g)
    y = (X[:, 0] > 0).long()
    K = laplace_kernel(X)
    r = kernel_regression(K, K[:5], torch.nn.functional.one_hot(y, 2), ridge=1e-10, y_train=y, y_test=y[:5])
    assert r.train_error == 0.0 and r.train_mse < 1e-8 and r.test_error == 0.0
    model = seeded(lambda: MLP(3, [64], 2), seed=1)
    Xt = torch.randn(20, 3, generator=g)
    out = ntk_regression(model, X, y, Xt, (Xt[:, 0] > 0).long(), ridge=1e-8)
    assert out.train_error == 0.0 and out.train_mse < 1e-6
    assert out.test_pred.shape == (20, 2) and 0.0 <= out.test_error <= 0.5


def test_measure_ntk_command(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "usernet.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(),"
        " torch.nn.Linear(16, 2))\n")
    torch.manual_seed(0)
    net = torch.nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    X = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=np.zeros(30, dtype=np.int64))
    env = {"PYTHONPATH": f"{root / 'src'}:{tmp_path}", "PATH": "/usr/bin:/bin"}
    base = [sys.executable, "-m", "overparam.cli", "measure", "ntk", "--model", "usernet:build",
            "--weights", str(tmp_path / "w.pt"), "--data", str(tmp_path / "d.npz"), "--n", "20"]
    out = subprocess.run(base + ["--json"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    ref = np.sort(np.linalg.eigvalsh(ntk_gram(net, torch.from_numpy(X[:20]), dtype=torch.float64).numpy()))[::-1]
    assert got["n"] == 20 and got["n_params"] == 3 * 16 + 16 + 16 * 2 + 2
    np.testing.assert_allclose(got["top_eigenvalues"], ref[:10], rtol=1e-8)
    text = subprocess.run(base, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert text.returncode == 0 and "decay over" in text.stdout
    bad = subprocess.run(base[:-4] + ["--data", str(tmp_path / "missing.npz")], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "missing.npz" in bad.stderr
