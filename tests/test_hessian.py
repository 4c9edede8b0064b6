"""The Hessian instrument against ground truth: dense Hessians from torch.func.hessian, dense Gauss-Newton
matrices from the Jacobian, torch.linalg.eigvalsh spectra and exact traces; all float64."""

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch import nn
from torch.func import functional_call, hessian, jacrev
from torch.utils.data import DataLoader, TensorDataset

from overparam.measure.hessian import (
    CurvatureError,
    GaussNewtonOperator,
    HessianOperator,
    ResidualOperator,
    hessian_density,
    hessian_eigs,
    hessian_index,
    hessian_trace,
)
from overparam.measure.hessian_operator import resolve_loss

F64 = torch.float64


def tiny_mlp(seed=0, d=4, h=(6, 5), c=3, act=nn.Tanh):
    torch.manual_seed(seed)
    sizes = [d, *h, c]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def blobs(n=60, d=4, c=3, seed=0, spread=0.7):
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(c, d, generator=g, dtype=F64)
    y = torch.arange(n) % c
    X = centers[y] + spread * torch.randn(n, d, generator=g, dtype=F64)
    return X, y


def trained(model, X, y, loss="cross_entropy", steps=300, lr=0.2):
    """A few hundred full-batch GD steps: the Hessian gets its outliers-plus-bulk shape."""
    model = model.to(F64)
    fn = resolve_loss(loss)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        fn(model(X), y).backward()
        opt.step()
    return model


def flat_fn(model, fn_of_outputs):
    """f(theta) for a flat parameter vector theta, for torch.func ground truth."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().to(F64).reshape(-1) for p in model.parameters()])

    def f(flat):
        ps = [t.view(s) for t, s in zip(torch.split(flat, sizes), shapes)]
        return fn_of_outputs(lambda x: functional_call(model, dict(zip(names, ps)), (x,)))

    return f, theta


def dense_hessian(model, loss, X, y):
    fn = resolve_loss(loss)
    f, theta = flat_fn(model, lambda fwd: fn(fwd(X), y))
    return hessian(f)(theta)


def dense_ggn(model, loss, X, y):
    """G = J^T H_out J with J the Jacobian of all outputs (N*C x P), H_out the Hessian of the loss in outputs."""
    fn = resolve_loss(loss)
    f, theta = flat_fn(model, lambda fwd: fwd(X))
    J = jacrev(f)(theta).reshape(-1, theta.numel())
    out = f(theta).detach()
    H_out = hessian(lambda z: fn(z.reshape(out.shape), y))(out.reshape(-1))
    return J.T @ H_out @ J


@pytest.fixture(scope="module")
def problem():
    X, y = blobs()
    model = trained(tiny_mlp(), X, y)
    return model, X, y


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_operator_matches_dense_hessian(loss):
    X, y = blobs(n=40, seed=1)
    model = tiny_mlp(1).to(F64)
    H = dense_hessian(model, loss, X, y)
    op = HessianOperator(model, loss, (X, y))
    assert op.shape == (H.shape[0], H.shape[0])
    assert torch.allclose(op.dense(), H, atol=1e-12, rtol=1e-10)
    v = torch.randn(op.dim, dtype=F64)
    assert torch.allclose(op @ v, H @ v, atol=1e-12)
    assert np.allclose(op.to_scipy() @ v.numpy(), (H @ v).numpy(), atol=1e-12)
    assert np.allclose(op.matvec(v.numpy()), (H @ v).numpy(), atol=1e-12)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_ggn_and_residual_match_dense(loss):
    X, y = blobs(n=40, seed=2)
    model = tiny_mlp(2).to(F64)
    H, G = dense_hessian(model, loss, X, y), dense_ggn(model, loss, X, y)
    G_op = GaussNewtonOperator(model, loss, (X, y), batch_size=16).dense()
    R_op = ResidualOperator(model, loss, (X, y), batch_size=16).dense()
    assert torch.allclose(G_op, G, atol=1e-12, rtol=1e-10)
    assert torch.allclose(R_op, H - G, atol=1e-12, rtol=1e-10)
    assert torch.linalg.eigvalsh(G_op).min() > -1e-12  # PSD for convex losses


def test_float32_operator_close_to_float64():
    X, y = blobs(n=30, seed=3)
    model = tiny_mlp(3)
    H = dense_hessian(model.to(F64), "cross_entropy", X, y)
    H32 = HessianOperator(model, "cross_entropy", (X.float(), y), dtype=torch.float32).dense()
    assert H32.dtype == torch.float32
    assert torch.allclose(H32.double(), H, atol=1e-5)


def test_streaming_equals_full_batch(problem):
    model, X, y = problem
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=F64)
    full = HessianOperator(model, "cross_entropy", (X, y))
    ref = full @ v
    loaders = [DataLoader(TensorDataset(X, y), batch_size=7),           # uneven last batch
               DataLoader(TensorDataset(X, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)),
               TensorDataset(X, y), (X, y)]
    for data in loaders:
        op = HessianOperator(model, "cross_entropy", data, batch_size=11)
        assert torch.allclose(op @ v, ref, atol=1e-13), type(data).__name__
        assert torch.allclose(op @ v, ref, atol=1e-13)  # second call: graphs of several batches are not cached
    g_full = GaussNewtonOperator(model, "cross_entropy", (X, y)) @ v
    g_stream = GaussNewtonOperator(model, "cross_entropy", DataLoader(TensorDataset(X, y), batch_size=9)) @ v
    assert torch.allclose(g_full, g_stream, atol=1e-13)


def test_matvecs_counted(problem):
    model, X, y = problem
    op = HessianOperator(model, "cross_entropy", (X, y), batch_size=25)
    assert op.n_matvecs == 0
    op @ torch.randn(op.dim, dtype=F64)
    op.matmat(torch.randn(op.dim, 4, dtype=F64))
    op.to_scipy().matvec(np.ones(op.dim))
    assert op.n_matvecs == 6
    assert op.n_passes == 1 and op.cached   # the 3 batches' graphs are kept after the first pass
    uncached = HessianOperator(model, "cross_entropy", (X, y), batch_size=25, cache=False)
    for _ in range(3):
        uncached @ torch.randn(op.dim, dtype=F64)
    assert uncached.n_passes == 3 and not uncached.cached
    tight = HessianOperator(model, "cross_entropy", (X, y), batch_size=25, cache_bytes=1)
    tight @ torch.randn(op.dim, dtype=F64)
    assert not tight.cached                  # graphs larger than the budget are not kept
    res = hessian_eigs(op, k=3)
    assert res.n_matvecs > 0 and op.n_matvecs == 6 + res.n_matvecs
    assert res.seconds > 0


def test_dropout_and_batchnorm_measured_in_eval_mode_and_flags_restored():
    X, y = blobs(n=20)
    for layer in (nn.Dropout(0.3), nn.BatchNorm1d(6)):
        model = nn.Sequential(nn.Linear(4, 6), layer, nn.Tanh(), nn.Linear(6, 3)).to(F64)
        if isinstance(layer, nn.BatchNorm1d):  # running statistics that are not the identity
            with torch.no_grad():
                model(X)
        op = HessianOperator(model, "cross_entropy", (X, y))
        assert "eval mode" in op.note
        assert model.training  # the caller's mode is restored after each measurement
        model.eval()
        ref = dense_hessian(model, "cross_entropy", X, y)
        model.train()
        assert torch.allclose(op.dense(), ref, atol=1e-12)
        assert model.training
    assert HessianOperator(tiny_mlp().to(F64), "cross_entropy", (X, y)).note == ""


@pytest.mark.parametrize("method", ["eigsh", "lanczos"])
@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
def test_eigs_match_eigvalsh(problem, method, which):
    model, X, y = problem
    op = HessianOperator(model, "cross_entropy", (X, y))
    ev = torch.linalg.eigvalsh(dense_hessian(model, "cross_entropy", X, y)).numpy()
    k = 6
    ref = {"largest": ev[::-1][:k], "smallest": ev[:k][::-1],
           "both": np.concatenate([ev[::-1][:3], ev[:3][::-1]])}[which]
    res = hessian_eigs(op, k=k, which=which, method=method)
    assert res.converged
    scale = np.abs(ev).max()
    assert np.allclose(res.values, ref, atol=1e-8 * scale, rtol=0), (res.values, ref)
    assert np.all(np.diff(res.values) <= 0)  # descending
    assert res.vectors.shape == (op.dim, k)
    assert res.residuals.max() < 1e-6 * scale
    H = dense_hessian(model, "cross_entropy", X, y).numpy()
    assert np.allclose(H @ res.vectors, res.vectors * res.values, atol=1e-6 * scale)


def test_eigs_dense_method_and_ggn(problem):
    model, X, y = problem
    G = dense_ggn(model, "cross_entropy", X, y)
    res = hessian_eigs(model, "cross_entropy", (X, y), k=4, method="dense", curvature="ggn")
    assert np.allclose(res.values, torch.linalg.eigvalsh(G).numpy()[::-1][:4], atol=1e-12)
    assert res.curvature == "ggn"


def test_slq_density_matches_exact_spectrum():
    X, y = blobs(n=80, d=6, c=4, seed=4)
    model = trained(tiny_mlp(4, d=6, h=(12, 10), c=4), X, y)
    ev = torch.linalg.eigvalsh(dense_hessian(model, "cross_entropy", X, y)).numpy()
    P = len(ev)
    assert P > 150  # larger than the Lanczos steps, so the quadrature is not trivially exact
    dens = hessian_density(model, "cross_entropy", (X, y), n_vectors=8, n_steps=60, seed=0)
    assert dens.n_matvecs == 8 * 60
    assert abs(dens.weights.sum() - 1) < 1e-10
    span = ev.max() - ev.min()
    w1 = wasserstein_distance(dens.nodes, ev, u_weights=dens.weights)
    # a spread-out or shifted estimate would be off by a sizeable fraction of the range
    assert w1 < 0.01 * span, (w1, span)
    assert abs(dens.nodes.max() - ev.max()) < 1e-8 * span  # extreme Ritz values converge first
    assert abs(np.trapezoid(dens.density, dens.grid) - 1) < 1e-3
    # the density puts its mass where the eigenvalues are: mass above the median eigenvalue ~ 1/2
    med = np.median(ev)
    assert abs(dens.mass_above(med) - (ev > med).mean()) < 0.15
    # different seeds, same picture; same seed, same numbers
    again = hessian_density(model, "cross_entropy", (X, y), n_vectors=8, n_steps=60, seed=0)
    assert np.array_equal(again.nodes, dens.nodes)


def test_trace_estimators():
    X, y = blobs(n=80, d=6, c=4, seed=5)
    model = trained(tiny_mlp(5, d=6, h=(12, 10), c=4), X, y)
    op = HessianOperator(model, "cross_entropy", (X, y))
    exact = float(torch.trace(dense_hessian(model, "cross_entropy", X, y)))
    assert abs(hessian_trace(op, method="exact").estimate - exact) < 1e-10 * abs(exact)
    errs_h, errs_pp = [], []
    for seed in range(6):
        h = hessian_trace(op, method="hutchinson", samples=30, seed=seed)
        pp = hessian_trace(op, method="hutch++", samples=30, seed=seed)
        assert h.n_matvecs == 30 and pp.n_matvecs == 30
        assert abs(h.estimate - exact) < 4 * h.std_error + 1e-12  # within 4 standard errors
        errs_h.append(abs(h.estimate - exact))
        errs_pp.append(abs(pp.estimate - exact))
    # the spectrum of a trained net is a few outliers + bulk: Hutch++ removes the outliers' variance
    assert np.mean(errs_pp) < np.mean(errs_h), (errs_pp, errs_h)


def test_index_exact_and_estimated():
    X, y = blobs(n=50, seed=6)
    model = tiny_mlp(6).to(F64)  # at initialization: indefinite Hessian
    ev = torch.linalg.eigvalsh(dense_hessian(model, "cross_entropy", X, y)).numpy()
    idx = hessian_index(model, "cross_entropy", (X, y))
    assert idx.method == "dense"
    tol = idx.tol
    assert idx.n_negative == int((ev < -tol).sum()) and 0 < idx.fraction < 1
    est = hessian_index(model, "cross_entropy", (X, y), method="slq", n_vectors=10, n_steps=40)
    assert est.method == "slq"
    assert abs(est.fraction - idx.fraction) < 0.15


def test_bad_arguments():
    X, y = blobs(n=10)
    model = tiny_mlp()
    with pytest.raises(ValueError, match="loss_fn"):
        HessianOperator(model, "hinge", (X, y))
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        HessianOperator(model, "mse", (X, y), params="nothing.*")
    with pytest.raises(ValueError, match="which"):
        hessian_eigs(model, "mse", (X, y), which="top")
    with pytest.raises(ValueError, match="rows"):
        HessianOperator(model, "mse", (X, y)).matmat(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="max_dim"):
        HessianOperator(model, "mse", (X, y)).dense(max_dim=10)


def test_results_plot(problem):
    import matplotlib

    matplotlib.use("Agg")
    model, X, y = problem
    op = HessianOperator(model, "cross_entropy", (X, y))
    for res in (hessian_eigs(op, k=3), hessian_density(op, n_vectors=2, n_steps=20), hessian_index(op)):
        fig = res.plot()
        assert fig.axes
