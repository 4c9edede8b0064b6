"""Curvature on realistic models, side by side with the peers: overparam, PyHessian, curvlinops, hessian-eigenthings.

Models (float32, eval-mode BatchNorm, briefly trained so the spectrum has its outliers):
  * resnet20     -- He et al.'s CIFAR ResNet-20, width 16 (272K parameters), on CIFAR-shaped synthetic images
                    (class templates plus noise; no download), 1,024 images in batches of 128;
  * transformer  -- a decoder-only LM from nn.TransformerEncoderLayer (nn.MultiheadAttention, LayerNorm; about 0.45M
                    parameters), 1,024 sequences of 32 tokens from a fixed bigram chain, batches of 128, next-token
                    cross-entropy under a padding mask.
Every measurement runs in its own subprocess (peak memory = that process's max RSS), on the same saved weights and
data, each library at its faster torch thread count (probed once per model on one HVP).

Rows: one full-data Hessian-vector product (time, peak memory, agreement with curvlinops); the top-1 and top-5
eigenvalues to 1e-3 relative accuracy against a tight float64 reference (time, products); the trace at equal
products (error against a long Hutch++ reference); SLQ density at equal Lanczos steps (time). Nothing is asserted:
ratios (peer time / overparam time) are printed and written to results/bench_scale.json.

    python benchmarks/bench_scale.py                  # both models
    python benchmarks/bench_scale.py --quick          # 256 examples, fewer rows (a smoke run)
    python benchmarks/bench_scale.py --resnet18       # also: ResNet-18 (11M) top eigenvalue on 1,024 images

Peers are installed with --no-deps (`make bench`); a missing one is reported and skipped. PyHessian 0.1's density()
calls torch.eig, removed from torch: the child gives it a torch.linalg-based stand-in.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "src"))
sys.path.insert(0, str(HERE))

LIBS = ("overparam", "pyhessian", "curvlinops", "eigenthings")
TOL = 1e-3


# ------------------------------------------------------------------------------------------- problems
def make_problem(name: str, n: int, batch: int):
    """(model, list of batches for overparam, list of (X, y) batches for the peers, loss for overparam, criterion
    for the peers, inputs_of) -- the same computation in both forms."""
    import torch
    from torch import nn

    from overparam.models import seeded

    g = torch.Generator().manual_seed(0)
    if name in ("resnet20", "resnet18"):
        from overparam.models.resnet import resnet18, resnet20

        model = seeded(resnet20 if name == "resnet20" else resnet18, 0)
        templates = torch.randn(10, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        X = templates[y] + 1.5 * torch.randn(n, 3, 32, 32, generator=g)
        ours = [(X[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]
        return model, ours, ours, "cross_entropy", nn.CrossEntropyLoss(), None
    from overparam.models.transformer import TinyTransformerLM, lm_inputs, lm_loss, synthetic_corpus

    model = seeded(lambda: TinyTransformerLM(vocab=128, d_model=112, heads=4, layers=3, max_len=32), 0)
    data = synthetic_corpus(n, seq_len=32, vocab=128, seed=0)
    ours = [{k: v[i:i + batch] for k, v in data.items()} for i in range(0, n, batch)]
    peers = []
    for b in ours:   # the peers take (X, y): tokens and mask packed in one tensor, targets with -100 where masked
        target = b["tokens"][:, 1:].masked_fill(~(b["mask"][:, 1:] & b["mask"][:, :-1]), -100)
        target = torch.cat([target, torch.full((len(target), 1), -100)], 1)
        peers.append((torch.stack([b["tokens"], b["mask"].long()], 1), target))
    return model, ours, peers, lm_loss, nn.CrossEntropyLoss(ignore_index=-100), lm_inputs


class Packed(__import__("torch").nn.Module):
    """The LM as the peers call it: model(packed) -> logits (B, vocab, T) for nn.CrossEntropyLoss."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, packed):
        return self.lm(packed[:, 0], packed[:, 1].bool()).transpose(1, 2)


def train_briefly(model, ours, loss, inputs_of, steps: int):
    import torch

    from overparam.measure.data import batches
    from overparam.measure.hessian_operator import resolve_loss

    fn = resolve_loss(loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        b = next(iter(batches([ours[step % len(ours)]], 10**9, inputs_of=inputs_of)))
        opt.zero_grad()
        fn(b.call(model), b.target).backward()
        opt.step()
    model.eval()


# ------------------------------------------------------------------------------------------- children
def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(task: dict) -> dict:
    """One measurement in this process (the peers inside the math attention kernel: PyTorch's fused attention has
    no double backward, and without it they fail on the transformer -- ``--plain-peers`` shows that)."""
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    plain = task.get("plain_peers") and task["lib"] != "overparam"
    with contextlib.nullcontext() if plain else sdpa_kernel([SDPBackend.MATH]):
        return _child(task)


def _child(task: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(task["threads"])
    state = torch.load(task["file"], weights_only=False)
    model, ours, peers, loss, criterion, inputs_of = make_problem(task["model"], task["n"], task["batch"])
    model.load_state_dict(state)
    model.eval()
    lib, kind = task["lib"], task["kind"]
    P = sum(p.numel() for p in model.parameters())
    v = torch.randn(P, generator=torch.Generator().manual_seed(1))
    out: dict = {"lib": lib, "kind": kind}
    peer_model = Packed(model) if task["model"] == "transformer" else model
    counter = {"n": 0}

    if lib == "overparam":
        from overparam.measure.hessian import HessianOperator, hessian_density, hessian_eigs, hessian_trace

        dtype = torch.float64 if kind == "reference" else torch.float32
        op = HessianOperator(model, loss, ours, inputs_of=inputs_of, dtype=dtype, batch_size=task["batch"])
        if kind == "hvp":
            t = time.perf_counter(); hv = op.matvec(v); out["seconds"] = time.perf_counter() - t
            t = time.perf_counter(); op.matvec(v); out["warm_seconds"] = time.perf_counter() - t
            out["cached"] = op.cached
            np.save(task["out"], hv.double().numpy())
        elif kind in ("eig", "reference"):
            t = time.perf_counter()
            res = hessian_eigs(op, k=task["k"], tol=TOL if kind == "eig" else 1e-9, method="lanczos")
            out.update(seconds=time.perf_counter() - t, products=res.n_matvecs, values=res.values.tolist())
        elif kind == "trace":
            t = time.perf_counter()
            res = hessian_trace(op, method="hutch++", samples=task["products"], seed=task["seed"])
            out.update(seconds=time.perf_counter() - t, estimate=res.estimate, products=res.n_matvecs)
        elif kind == "density":
            t = time.perf_counter()
            hessian_density(op, n_vectors=1, n_steps=task["steps"])
            out["seconds"] = time.perf_counter() - t
    elif lib == "pyhessian":
        from pyhessian import hessian as PyHessian

        ph_module = sys.modules["pyhessian.hessian"]   # the package re-exports the class under the module's name

        if not hasattr(torch, "eig"):   # PyHessian 0.1's density() calls the removed torch.eig
            def eig(a, eigenvectors=False):
                w, V = torch.linalg.eigh(a)
                return torch.stack([w, torch.zeros_like(w)], 1), V
            torch.eig = eig
        original = ph_module.hessian.dataloader_hv_product

        def counted(self, vec):
            counter["n"] += 1
            return original(self, vec)

        ph_module.hessian.dataloader_hv_product = counted
        ph = PyHessian(peer_model, criterion, dataloader=peers, cuda=False)
        vl = [t.view_as(p).clone() for t, p in zip(torch.split(v, [p.numel() for p in ph.params]), ph.params)]
        torch.manual_seed(task.get("seed", 0))
        t = time.perf_counter()
        if kind == "hvp":
            _, hv = ph.dataloader_hv_product(vl)
            out["seconds"] = time.perf_counter() - t
            np.save(task["out"], torch.cat([h.reshape(-1) for h in hv]).double().numpy())
        elif kind == "eig":
            vals, _ = ph.eigenvalues(maxIter=100, tol=TOL, top_n=task["k"])
            out.update(seconds=time.perf_counter() - t, values=sorted(vals, reverse=True))
        elif kind == "trace":
            samples = ph.trace(maxIter=task["products"], tol=0.0)
            out.update(seconds=time.perf_counter() - t, estimate=float(np.mean(samples)))
        elif kind == "density":
            ph.density(iter=task["steps"], n_v=1)
            out["seconds"] = time.perf_counter() - t
        out["products"] = counter["n"]
    elif lib == "curvlinops":
        from curvlinops import HessianLinearOperator
        from scipy.sparse.linalg import LinearOperator, eigsh

        params = [p for p in peer_model.parameters() if p.requires_grad]
        H = HessianLinearOperator(peer_model, criterion, params, peers, progressbar=False, check_deterministic=False)
        A = H.to_scipy(dtype=np.float32)

        def mv(x):
            counter["n"] += 1 if x.ndim == 1 else x.shape[1]
            return A @ x

        S = LinearOperator(A.shape, matvec=mv, rmatvec=mv, matmat=mv, dtype=np.float32)
        t = time.perf_counter()
        if kind == "hvp":
            hv = S @ v.numpy()
            out["seconds"] = time.perf_counter() - t
            np.save(task["out"], np.asarray(hv, dtype=np.float64))
        elif kind == "eig":
            v0 = np.random.default_rng(0).standard_normal(P).astype(np.float32)
            vals = eigsh(S, k=task["k"], which="LA", tol=TOL, v0=v0, return_eigenvectors=False)
            out.update(seconds=time.perf_counter() - t, values=sorted(vals.tolist(), reverse=True))
        out["products"] = counter["n"]
    elif lib == "eigenthings":
        import hessian_eigenthings as he

        def loss_fn(m, batch):
            x, y = batch
            return criterion(m(x), y)

        op = he.HessianOperator(peer_model, peers, loss_fn)
        original = op.matvec

        def counted_mv(x):
            counter["n"] += 1
            return original(x)

        op.matvec = counted_mv
        t = time.perf_counter()
        if kind == "hvp":
            hv = op.matvec(v)
            out["seconds"] = time.perf_counter() - t
            np.save(task["out"], hv.double().numpy())
        elif kind == "eig":
            res = he.lanczos(op, k=task["k"], tol=TOL, which="LA", seed=0)
            out.update(seconds=time.perf_counter() - t,
                       values=sorted(torch.as_tensor(res.eigenvalues).tolist(), reverse=True))
        out["products"] = counter["n"]
    out["peak_mb"] = peak_mb()
    return out


def run_child(task: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(task["threads"]))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)], capture_output=True, text=True,
                          env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"lib": task["lib"], "kind": task["kind"], "error": tail[:200]}
    return json.loads(lines[-1])


def available(lib: str) -> str:
    mod = {"overparam": "overparam", "pyhessian": "pyhessian", "curvlinops": "curvlinops",
           "eigenthings": "hessian_eigenthings"}[lib]
    try:
        __import__(mod)
    except Exception as exc:  # noqa: BLE001
        return f"not installed ({type(exc).__name__})"
    return ""


# ------------------------------------------------------------------------------------------- main
def bench_model(name: str, n: int, batch: int, quick: bool, tmp: Path, rows: list, ratios: dict) -> None:
    import numpy as np
    import torch

    torch.manual_seed(0)
    model, ours, _, loss, _, inputs_of = make_problem(name, n, batch)
    train_briefly(model, ours, loss, inputs_of, steps=10 if quick else 40)
    weights = tmp / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    P = sum(p.numel() for p in model.parameters())
    libs = [lib for lib in LIBS if not available(lib)]
    for lib in LIBS:
        if available(lib):
            print(f"  {lib}: {available(lib)}")
    base = {"model": name, "file": str(weights), "n": n, "batch": batch}
    print(f"\n== {name}: {P:,} parameters, {n} examples in batches of {batch}, float32, eval-mode", flush=True)

    threads = {}
    for lib in libs:   # each library at its faster thread count (one HVP each way)
        times = {}
        for th in (1, 2):
            r = run_child({**base, "lib": lib, "kind": "hvp", "threads": th, "out": str(tmp / "probe.npy")})
            times[th] = r.get("seconds", float("inf"))
        threads[lib] = min(times, key=times.get)
    print("  threads: " + ", ".join(f"{k}={v}" for k, v in threads.items()))

    # -- one HVP ------------------------------------------------------------------------------------
    hv = {}
    print(f"  {'one full-data HVP':<28}{'seconds':>9}{'warm s':>9}{'peak MB':>9}{'rel. diff vs curvlinops':>26}")
    res_hvp = {}
    for lib in libs:
        r = run_child({**base, "lib": lib, "kind": "hvp", "threads": threads[lib], "out": str(tmp / f"hv_{lib}.npy")})
        res_hvp[lib] = r
        if "error" not in r:
            hv[lib] = np.load(tmp / f"hv_{lib}.npy")
    ref = hv.get("curvlinops")
    for lib, r in res_hvp.items():
        if "error" in r:
            print(f"  {lib:<28} failed: {r['error']}")
            continue
        diff = (np.linalg.norm(hv[lib] - ref) / np.linalg.norm(ref)) if ref is not None else float("nan")
        warm = r.get("warm_seconds", float("nan"))
        print(f"  {lib:<28}{r['seconds']:9.2f}{warm:9.2f}{r['peak_mb']:9.0f}{diff:26.1e}")
        rows.append({"model": name, "task": "hvp", "lib": lib, "seconds": r["seconds"], "warm_seconds": warm,
                     "peak_mb": r["peak_mb"], "rel_diff_vs_curvlinops": diff, "threads": threads[lib]})
    if "overparam" in res_hvp and "seconds" in res_hvp["overparam"]:
        fastest_peer = min((r["seconds"] for lib, r in res_hvp.items() if lib != "overparam" and "seconds" in r),
                           default=float("nan"))
        ratios[f"{name} one HVP: fastest peer / overparam"] = fastest_peer / res_hvp["overparam"]["seconds"]

    # -- top eigenvalues ----------------------------------------------------------------------------
    refv = run_child({**base, "lib": "overparam", "kind": "reference", "k": 5, "threads": threads["overparam"]})
    exact = np.asarray(refv.get("values", [np.nan] * 5))
    print(f"  reference top-5 (float64 Lanczos, tol 1e-9): {np.array2string(exact, precision=5)}")
    for k in (1, 5):
        print(f"  {'top-' + str(k) + ' to 1e-3':<28}{'seconds':>9}{'products':>10}{'max rel err':>13}")
        got = {}
        for lib in libs:
            r = run_child({**base, "lib": lib, "kind": "eig", "k": k, "threads": threads[lib]})
            if "error" in r:
                print(f"  {lib:<28} failed: {r['error']}")
                continue
            err = float(np.max(np.abs(np.asarray(r["values"][:k]) - exact[:k]) / np.abs(exact[:k])))
            got[lib] = r
            print(f"  {lib:<28}{r['seconds']:9.2f}{r['products']:10d}{err:13.1e}")
            rows.append({"model": name, "task": f"top{k}", "lib": lib, "seconds": r["seconds"],
                         "products": r["products"], "max_rel_err": err, "threads": threads[lib]})
        if "overparam" in got:
            for lib in got:
                if lib != "overparam":
                    ratios[f"{name} top-{k}: {lib} / overparam"] = got[lib]["seconds"] / got["overparam"]["seconds"]
    if quick:
        return

    # -- trace at equal products, SLQ at equal steps ---------------------------------------------------
    long_ref = run_child({**base, "lib": "overparam", "kind": "trace", "products": 300, "seed": 99,
                          "threads": threads["overparam"]})
    tr_ref = long_ref.get("estimate", float("nan"))
    print(f"  trace reference (Hutch++, 300 products): {tr_ref:.5g}")
    for lib in [lib for lib in libs if lib in ("overparam", "pyhessian")]:
        errs, secs = [], []
        for seed in range(3):
            r = run_child({**base, "lib": lib, "kind": "trace", "products": 30, "seed": seed, "threads": threads[lib]})
            if "error" in r:
                break
            errs.append(abs(r["estimate"] - tr_ref) / abs(tr_ref))
            secs.append(r["seconds"])
        if errs:
            print(f"  trace, 30 products: {lib:<16} mean rel err {np.mean(errs):.2e}, {np.mean(secs):.2f} s")
            rows.append({"model": name, "task": "trace30", "lib": lib, "rel_err": float(np.mean(errs)),
                         "seconds": float(np.mean(secs))})
    dens = {}
    for lib in [lib for lib in libs if lib in ("overparam", "pyhessian")]:
        r = run_child({**base, "lib": lib, "kind": "density", "steps": 50, "threads": threads[lib]})
        if "error" in r:
            print(f"  SLQ 50 steps: {lib} failed: {r['error']}")
            continue
        dens[lib] = r["seconds"]
        print(f"  SLQ density, 1 vector x 50 steps: {lib:<16} {r['seconds']:.2f} s")
        rows.append({"model": name, "task": "slq50", "lib": lib, "seconds": r["seconds"]})
    if len(dens) == 2:
        ratios[f"{name} SLQ 50 steps: pyhessian / overparam"] = dens["pyhessian"] / dens["overparam"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default="resnet20,transformer")
    ap.add_argument("--resnet18", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from benchjson import version_of, write_result

    n, batch = (256, 128) if args.quick else (1024, 128)
    rows, ratios = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            bench_model(name, n, batch, args.quick, Path(tmp), rows, ratios)
        if args.resnet18:
            import torch

            torch.manual_seed(0)
            model, ours, *_ = make_problem("resnet18", n, batch)
            torch.save(model.state_dict(), Path(tmp) / "resnet18.pt")
            r = run_child({"model": "resnet18", "file": str(Path(tmp) / "resnet18.pt"), "n": n, "batch": batch,
                           "lib": "overparam", "kind": "eig", "k": 1, "threads": 2})
            print(f"\n== resnet18 (11.2M parameters, {n} images): top eigenvalue "
                  + (f"{r['values'][0]:.5g} in {r['seconds']:.1f} s, {r['products']} products, peak "
                     f"{r['peak_mb']:.0f} MB" if "error" not in r else f"failed: {r['error']}"))
            rows.append({"model": "resnet18", "task": "top1", "lib": "overparam", **{k: r.get(k) for k in
                         ("seconds", "products", "peak_mb", "values", "error")}})
    print("\nRATIOS (peer time / overparam time; > 1: overparam faster)")
    for key, value in ratios.items():
        print(f"  {key}: {value:.2f}x")
    peers = {lib: version_of(p) for lib, p in (("pyhessian", "pyhessian"), ("curvlinops", "curvlinops-for-pytorch"),
                                                ("eigenthings", "hessian-eigenthings"))}
    path = write_result("bench_scale", rows, ratios, peers, notes=f"{'quick' if args.quick else 'full'} run, "
                        f"{time.perf_counter() - start:.0f} s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
