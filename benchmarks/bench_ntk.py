"""Empirical NTK: overparam.measure.ntk.ntk_gram vs the torch.func tutorial's two methods and nngeometry.

Same model, same points, float64, for everyone. Each run is its own subprocess (peak memory = the child's
max RSS; address space capped so a method that hits the memory wall fails instead of swapping the machine),
and its Gram is compared with ours (relative Frobenius error; target <= 1e-5).

Peers:
  * tutorial-jac   -- PyTorch tutorial "Neural Tangent Kernels" (torch.func): vmap(jacrev) + einsum, one shot;
  * tutorial-ntkvp -- the same tutorial's NTK-vector products: vmap over pairs of vjp then jvp, one shot;
  * nngeometry     -- nngeometry.GramMatrix (full (O, N, O, N) Gram by layer hooks); install with
                      `pip install --no-deps nngeometry` (its requirements would upgrade torch).
Nothing here asserts a time; it prints a table and ratios (peer time / ours).

    python benchmarks/bench_ntk.py            # N = 500, 2000 (+ 4000 blocked), MLP and CNN
    python benchmarks/bench_ntk.py --fast     # N = 200 only (smoke run)
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GB = 1 << 30


# ---------------------------------------------------------------------------------------------- models


def build(name: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "mlp":  # MNIST-1D-sized MLP 40-64-64-10
        return nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    class SmallCNN(nn.Module):  # two 1-D convolutions over a 40-sample signal, linear head
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(1, 16, 5, padding=2)
            self.c2 = nn.Conv1d(16, 16, 5, padding=2)
            self.head = nn.Linear(16 * 40, 10)

        def forward(self, x):
            h = torch.relu(self.c1(x.unsqueeze(1)))
            return self.head(torch.relu(self.c2(h)).flatten(1))

    return SmallCNN()


def points(n: int):
    import torch

    return torch.randn(n, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- peers (inline)


def tutorial_jacobian(model, x, mode):
    """The torch.func tutorial's Jacobian contraction, as written there (one shot, no blocking)."""
    import torch
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(params, x):
        return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac2 = [j.flatten(2) for j in jac2.values()]
    expr = {"full": "Naf,Mbf->NMab", "trace": "Naf,Maf->NM", "diagonal": "Naf,Maf->NMa"}[mode]
    return torch.stack([torch.einsum(expr, j1, j2) for j1, j2 in zip(jac1, jac2)]).sum(0)


def tutorial_ntk_vp(model, x, mode):
    """The torch.func tutorial's NTK-vector products (vjp then jvp over an O x O basis, vmapped over pairs)."""
    import torch
    from torch.func import functional_call, jvp, vjp, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def func(params, x):
        return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)

    def get_ntk(x1, x2):
        def func_x1(p):
            return func(p, x1)

        def func_x2(p):
            return func(p, x2)

        output, vjp_fn = vjp(func_x1, params)

        def get_ntk_slice(vec):
            vjps = vjp_fn(vec)
            _, jvps = jvp(func_x2, (params,), vjps)
            return jvps

        basis = torch.eye(output.numel(), dtype=output.dtype).view(output.numel(), -1)
        return vmap(get_ntk_slice)(basis)

    result = vmap(vmap(get_ntk, (None, 0)), (0, None))(x, x)
    if mode == "full":
        return result
    return torch.einsum("NMKK->NM", result) if mode == "trace" else torch.einsum("NMKK->NMK", result)


def nngeometry_gram(model, x, mode):
    import torch
    from nngeometry import GramMatrix  # noqa: F401  (ImportError -> "not installed")

    y = torch.zeros(len(x), dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=250)
    G = GramMatrix(model, loader, function=lambda xb, yb: model(xb)).data  # (O, N, O, N)
    full = G.permute(1, 3, 0, 2)
    if mode == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    return diag.sum(-1) if mode == "trace" else diag


def ours(model, x, mode, method="auto", memory=2 * GB):
    from overparam.measure.ntk import ntk_gram

    res = ntk_gram(model, x, mode=mode, method=method, dtype=__import__("torch").float64, memory=memory)
    return res.gram, res.method


# ---------------------------------------------------------------------------------------------- child


def child(spec: dict) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = build(spec["model"]).double().eval()
    x = points(spec["n"])
    start = time.perf_counter()
    info = ""
    if spec["impl"] == "ours":
        gram, info = ours(model, x, spec["mode"], spec.get("method", "auto"), spec.get("memory", 2 * GB))
    elif spec["impl"] == "tutorial-jac":
        gram = tutorial_jacobian(model, x, spec["mode"])
    elif spec["impl"] == "tutorial-ntkvp":
        gram = tutorial_ntk_vp(model, x, spec["mode"])
    else:
        gram = nngeometry_gram(model, x, spec["mode"])
    seconds = time.perf_counter() - start
    np.save(spec["out"], gram.detach().numpy())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak": peak, "info": info}))


def run_child(spec: dict, cap: int, timeout: float) -> dict:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    try:
        p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                           preexec_fn=limit, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f}s"}
    if p.returncode != 0:
        err = p.stderr.strip().splitlines()
        if "No module named 'nngeometry'" in p.stderr:
            return {"error": "not installed"}
        memory = any(k in p.stderr for k in ("can't allocate memory", "out of memory", "MemoryError",
                                              "std::bad_alloc", "DefaultCPUAllocator"))
        return {"error": "out of memory (cap %.0f GB)" % (cap / GB) if memory or p.returncode < 0
                else (err[-1][:80] if err else f"exit {p.returncode}")}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--fast", action="store_true", help="N=200 only")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    import numpy as np

    sizes = [200] if args.fast else [500, 2000]
    peers = ["tutorial-jac", "tutorial-ntkvp", "nngeometry"]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_ntk_"))
    print(f"{'model':<5} {'N':>5} {'mode':<6} {'impl':<15} {'seconds':>9} {'peak MB':>9} {'rel.err':>9}  ratio  note")

    def one(model, n, mode, impl, cap, ref=None, **extra):
        out = tmp / f"{model}_{n}_{mode}_{impl}.npy"
        spec = {"model": model, "n": n, "mode": mode, "impl": impl, "out": str(out), **extra}
        r = run_child(spec, cap, args.timeout)
        if "error" not in r and ref is not None:
            a, b = np.load(out), np.load(ref)
            r["rel_err"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        r["path"] = out
        return r

    def show(model, n, mode, impl, r, base):
        if "error" in r:
            print(f"{model:<5} {n:>5} {mode:<6} {impl:<15} {'-':>9} {'-':>9} {'-':>9}  {'-':>5}  {r['error']}")
            return
        ratio = r["seconds"] / base["seconds"] if base and "seconds" in base else float("nan")
        err = r.get("rel_err", 0.0)
        flag = "" if err <= 1e-5 else "  DISAGREES"
        print(f"{model:<5} {n:>5} {mode:<6} {impl:<15} {r['seconds']:>9.2f} {r['peak'] / 2**20:>9.0f} {err:>9.1e}  "
              f"{ratio:>5.2f}  {r.get('info', '')}{flag}", flush=True)
        rows.append({"model": model, "n": n, "mode": mode, "impl": impl, **{k: v for k, v in r.items() if k != 'path'}})

    for model in ("mlp", "cnn"):
        for n in sizes:
            modes = ["full", "trace"] if n <= 500 else ["trace"]
            for mode in modes:
                base = one(model, n, mode, "ours", 16 * GB)
                show(model, n, mode, "ours", base, base)
                if "error" in base:
                    continue
                for impl in peers:
                    show(model, n, mode, impl, one(model, n, mode, impl, 16 * GB, base["path"]), base)
        if not args.fast:  # N=4000 within a 6 GB address space: ours with a 1 GB block budget
            n, cap = 4000, 6 * GB
            base = one(model, n, "trace", "ours", cap, memory=1 * GB)
            show(model, n, "trace", "ours(1GB)", base, base)
            if "error" not in base:
                for impl in peers:
                    show(model, n, "trace", impl, one(model, n, "trace", impl, cap, base["path"]), base)
    print("\nratio = seconds of the row / seconds of ours on the same model, N and mode (>1: ours faster)")
    (tmp / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
