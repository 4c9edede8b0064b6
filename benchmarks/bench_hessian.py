"""Hessian eigenvalues and trace: overparam vs PyHessian vs curvlinops, same model, same data, same process.

Model: MLP 40-40-40-10 (3,690 parameters, ReLU), trained 300 full-batch Adam steps on 1,000 MNIST-1D examples,
float64, one torch (and BLAS) thread for every library (small models run fastest on one thread, and it keeps the
comparison fair on a shared 2-core machine). Ground truth: all eigenvalues of the dense Hessian built by
``torch.func.hessian`` (independent of every library under test).

Reported: the cost of one Hessian-vector product relative to one gradient; the top-10 eigenvalues' wall
time, matvecs and worst relative error; the trace's error at equal matvecs. Nothing is asserted: the
targets from issue 4 are printed next to the measured ratios.

Peers (installed without their dependencies, which would replace torch):
    .venv/bin/pip install --no-deps pyhessian==0.1 curvlinops-for-pytorch==3.0.1 einops einconv linear-operator==0.6.1
A missing peer is reported as "not installed" and skipped.
"""

from __future__ import annotations

import os

# ARPACK's eigenvector step and our reorthogonalization call BLAS on P x 30 matrices: threads only add
# contention there. Set before numpy loads, for every library alike.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from overparam.data import load_dataset  # noqa: E402
from overparam.measure.hessian import HessianOperator, hessian_eigs, hessian_trace  # noqa: E402
from overparam.models import MLP, seeded  # noqa: E402

K = 10
TARGET_REL = 1e-6


def setup(n=1000, width=40, steps=300):
    torch.set_num_threads(1)
    data = load_dataset("mnist1d", seed=0, n_train=n, n_test=10)
    X, y = data.X_train.to(torch.float64), data.y_train
    model = seeded(lambda: MLP(X.shape[1], [width, width], 10), seed=0).to(torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model, X, y


def exact_spectrum(model, X, y):
    """All eigenvalues of the dense Hessian, row by row with plain autograd (double backward on one graph).

    (torch.func.hessian gives the same matrix -- tests/test_hessian.py checks our operator against it on
    small models -- but takes a minute at this size.)"""
    params = list(model.parameters())
    loss = nn.functional.cross_entropy(model(X), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = torch.cat([t.reshape(-1) for t in grads])
    P = g.numel()
    H = torch.empty(P, P, dtype=torch.float64)
    for i in range(P):
        row = torch.autograd.grad(g[i], params, retain_graph=True)
        H[i] = torch.cat([t.reshape(-1) for t in row])
    return torch.linalg.eigvalsh(0.5 * (H + H.T)).numpy()


def best_of(fn, repeat=3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def rel_err(values, exact_top):
    v = np.sort(np.asarray(values, dtype=float))[::-1][:K]
    return float(np.max(np.abs(v - exact_top) / np.abs(exact_top)))


def gradient_time(model, X, y):
    params = list(model.parameters())

    def grad():
        loss = nn.functional.cross_entropy(model(X), y)
        return torch.autograd.grad(loss, params)

    return best_of(grad, 20)[0]


# ----------------------------------------------------------------------------------------------- peers
def load_pyhessian():
    try:
        from pyhessian import hessian as PyHessian
        ph_module = sys.modules["pyhessian.hessian"]  # the package re-exports the class under the module's name
    except Exception as exc:  # noqa: BLE001
        return None, None, f"not installed ({type(exc).__name__})"
    return PyHessian, ph_module, ""


def load_curvlinops():
    try:
        from curvlinops import HessianLinearOperator
    except Exception as exc:  # noqa: BLE001
        return None, f"not installed ({type(exc).__name__}: {exc})"
    return HessianLinearOperator, ""


class Counter:
    def __init__(self):
        self.n = 0


def pyhessian_counted(ph_module, counter):
    """Count PyHessian's HVPs by wrapping the function its power iteration calls."""
    original = ph_module.hessian_vector_product

    def counted(gradsH, params, v):
        counter.n += 1
        return original(gradsH, params, v)

    ph_module.hessian_vector_product = counted
    return original


def counted_scipy(op, counter):
    from scipy.sparse.linalg import LinearOperator

    A = op.to_scipy(dtype=np.float64)

    def mv(x):
        counter.n += 1 if x.ndim == 1 else x.shape[1]
        return A @ x

    return LinearOperator(A.shape, matvec=mv, rmatvec=mv, matmat=mv, dtype=np.float64)


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    t0 = time.perf_counter()
    model, X, y = setup()
    P = sum(p.numel() for p in model.parameters())
    ev = exact_spectrum(model, X, y)
    exact_top = ev[::-1][:K]
    print(f"model MLP 40-40-40-10, P={P}, N={len(X)} MNIST-1D, float64, 1 thread; exact spectrum in "
          f"{time.perf_counter() - t0:.1f} s; top-{K}: {np.array2string(exact_top, precision=4)}")
    print(f"exact trace {ev.sum():.6g}; eigenvalues < 0: {(ev < -1e-10 * np.abs(ev).max()).mean():.3f}")
    PyHessian, ph_module, ph_why = load_pyhessian()
    CurvHessian, cl_why = load_curvlinops()
    rows = []

    # --- one HVP vs one gradient -------------------------------------------------------------------
    t_grad = gradient_time(model, X, y)
    v = torch.randn(P, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op = HessianOperator(model, "cross_entropy", (X, y))
    op @ v  # builds and caches the gradient graph (all data in one batch)
    t_ours_cached = best_of(lambda: op @ v, 20)[0]
    op_stream = HessianOperator(model, "cross_entropy", (X, y), batch_size=250)   # 4 batches, no cache
    t_ours_stream = best_of(lambda: op_stream @ v, 10)[0]
    op_nocache = HessianOperator(model, "cross_entropy", (X, y), cache=False)    # 1 batch, graph rebuilt
    t_ours_nocache = best_of(lambda: op_nocache @ v, 10)[0]
    print(f"\none gradient: {1e3 * t_grad:.2f} ms")
    print(f"{'one HVP':<44} {'ms':>8} {'x gradient':>11}")
    hvp_rows = [("overparam (graph cached, data in one batch)", t_ours_cached),
                ("overparam (graph rebuilt each product)", t_ours_nocache),
                ("overparam (streamed, 4 batches of 250)", t_ours_stream)]
    if CurvHessian is not None:
        params = list(model.parameters())
        cl = CurvHessian(model, nn.CrossEntropyLoss(), params, [(X, y)], check_deterministic=False)
        cl_sp = cl.to_scipy(dtype=np.float64)
        vn = v.numpy()
        cl_sp @ vn
        hvp_rows.append(("curvlinops HessianLinearOperator", best_of(lambda: cl_sp @ vn, 10)[0]))
    if PyHessian is not None:
        torch.set_default_dtype(torch.float64)  # PyHessian draws its vectors in the default dtype
        ph = PyHessian(model, nn.CrossEntropyLoss(), data=(X, y), cuda=False)
        vl = [t.clone() for t in op._unflatten(v)]
        hvp_rows.append(("PyHessian (graph cached, single batch)",
                         best_of(lambda: ph_module.hessian_vector_product(ph.gradsH, ph.params, vl), 20)[0]))
    for name, t in hvp_rows:
        print(f"{name:<44} {1e3 * t:8.2f} {t / t_grad:11.2f}")
    print(f"  target: one HVP <= 2.5x a gradient -> overparam cached {t_ours_cached / t_grad:.2f}x, "
          f"rebuilt {t_ours_nocache / t_grad:.2f}x")

    # --- top-10 eigenvalues ------------------------------------------------------------------------
    print(f"\ntop-{K} eigenvalues vs exact (dense)")
    print(f"{'method':<48} {'seconds':>8} {'matvecs':>8} {'max rel err':>12}")

    def ours(method, tol):
        opx = HessianOperator(model, "cross_entropy", (X, y))
        t = time.perf_counter()
        res = hessian_eigs(opx, k=K, method=method, tol=tol)
        return time.perf_counter() - t, res.n_matvecs, rel_err(res.values, exact_top)

    for method, tol in (("eigsh", 1e-6), ("eigsh", 1e-10), ("lanczos", 1e-7), ("lanczos", 1e-10)):
        secs, mv, err = min((ours(method, tol) for _ in range(3)), key=lambda r: r[0])
        rows.append((f"overparam hessian_eigs({method}, tol={tol:g})", secs, mv, err))
    if CurvHessian is not None:
        from scipy.sparse.linalg import eigsh

        for tol in (1e-6, 1e-10):
            def run_cl(tol=tol):
                cnt = Counter()
                cl = CurvHessian(model, nn.CrossEntropyLoss(), list(model.parameters()), [(X, y)],
                                 check_deterministic=False)
                A = counted_scipy(cl, cnt)
                v0 = np.random.default_rng(0).standard_normal(P)
                t = time.perf_counter()
                vals = eigsh(A, k=K, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
                return time.perf_counter() - t, cnt.n, rel_err(vals, exact_top)
            secs, mv, err = min((run_cl() for _ in range(2)), key=lambda r: r[0])
            rows.append((f"curvlinops eigsh(HessianLinearOperator, tol={tol:g})", secs, mv, err))
    else:
        rows.append((f"curvlinops: {cl_why}", np.nan, 0, np.nan))
    if PyHessian is not None:
        cnt = Counter()
        original = pyhessian_counted(ph_module, cnt)
        for max_iter, tol in ((100, 1e-3), (1000, 1e-8), (3000, 1e-12)):
            torch.manual_seed(0)
            cnt.n = 0
            ph = PyHessian(model, nn.CrossEntropyLoss(), data=(X, y), cuda=False)
            t = time.perf_counter()
            vals, _ = ph.eigenvalues(maxIter=max_iter, tol=tol, top_n=K)
            rows.append((f"PyHessian power iteration (maxIter={max_iter}, tol={tol:g})",
                         time.perf_counter() - t, cnt.n, rel_err(vals, exact_top)))
        ph_module.hessian_vector_product = original
    else:
        rows.append((f"PyHessian: {ph_why}", np.nan, 0, np.nan))
    for name, secs, mv, err in rows:
        print(f"{name:<48} {secs:8.3f} {mv:8d} {err:12.2e}")

    # ratios at equal (target) accuracy: the fastest run of each library reaching TARGET_REL
    def fastest(prefix, accuracy=TARGET_REL):
        ok = [r for r in rows if r[0].startswith(prefix) and r[3] <= accuracy]
        return min(ok, key=lambda r: r[1]) if ok else None

    best_ours = fastest("overparam")
    print(f"\nfastest to {TARGET_REL:g} relative error: overparam {best_ours[0] if best_ours else 'none'}")
    if best_ours:
        for prefix, target in (("curvlinops", "no slower than curvlinops (ratio >= 1)"),
                               ("PyHessian", ">= 3x faster than PyHessian")):
            peer = fastest(prefix)
            if peer is None:
                # peer never reached the target: compare with its most accurate run, which we beat on accuracy too
                cands = [r for r in rows if r[0].startswith(prefix) and np.isfinite(r[3])]
                if not cands:
                    print(f"  {prefix}: not measured")
                    continue
                peer = min(cands, key=lambda r: r[3])
                ours_at = fastest("overparam", max(peer[3], TARGET_REL))
                print(f"  {prefix} never reached {TARGET_REL:g} (best {peer[3]:.1e} in {peer[1]:.2f} s); "
                      f"overparam reaches that in {ours_at[1]:.3f} s: speed-up {peer[1] / ours_at[1]:.1f}x "
                      f"[target: {target}]")
            else:
                print(f"  {prefix}: {peer[1]:.3f} s ({peer[2]} matvecs) vs overparam {best_ours[1]:.3f} s "
                      f"({best_ours[2]} matvecs): speed-up {peer[1] / best_ours[1]:.1f}x [target: {target}]")

    # --- trace at equal matvecs --------------------------------------------------------------------
    n_mv = 99
    exact_tr = float(ev.sum())
    print(f"\ntrace with {n_mv} matvecs (mean |relative error| over 5 seeds; exact {exact_tr:.6g})")
    print(f"{'method':<36} {'seconds':>8} {'rel err':>10}")
    opx = HessianOperator(model, "cross_entropy", (X, y))
    for method in ("hutchinson", "hutch++"):
        errs, secs = [], []
        for seed in range(5):
            r = hessian_trace(opx, method=method, samples=n_mv, seed=seed)
            errs.append(abs(r.estimate - exact_tr) / abs(exact_tr))
            secs.append(r.seconds)
        print(f"{'overparam ' + method:<36} {np.mean(secs):8.3f} {np.mean(errs):10.2e}")
    if PyHessian is not None:
        errs, secs = [], []
        for seed in range(5):
            torch.manual_seed(seed)
            ph = PyHessian(model, nn.CrossEntropyLoss(), data=(X, y), cuda=False)
            t = time.perf_counter()
            samples = ph.trace(maxIter=n_mv, tol=0.0)   # tol=0: exactly maxIter samples
            secs.append(time.perf_counter() - t)
            errs.append(abs(np.mean(samples) - exact_tr) / abs(exact_tr))
        print(f"{'PyHessian trace (Hutchinson)':<36} {np.mean(secs):8.3f} {np.mean(errs):10.2e}")
    else:
        print(f"PyHessian: {ph_why}")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
