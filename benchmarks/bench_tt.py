"""TTLinear vs nn.Linear: a 1024 x 1024 layer (modes 4x8x4x8 on both sides), TT ranks 1-16, batches 1-1024.

Both sides run in the same process, on the same input, alternating (round robin: every candidate is timed once per
round, so a burst of load hits all of them), one thread unless ``--threads``; each time is the fastest of
``--reps`` rounds. Per (rank, batch), for inference (forward under no_grad) and a training step (forward,
backward of a fixed output gradient, SGD step), it prints:

* the parameter and FLOP ratios (dense / TT; FLOPs of the one-core-at-a-time contraction),
* dense time / TT time with ``contraction="auto"`` (> 1: the TT layer is faster),
* the plan auto chose (by the cost model of ``overparam.models.tt_contract``) and the fastest measured plan
  among the best plan of every path (sequential, grouped, einsum, dense rebuild), and auto's time / that best time.

Then a whole network: the ``tensorized`` study's MLP (MNIST-1D, 40-512-512-10, 512 x 512 layer as 8x8x8 modes,
input layer dense, batch 64 and 256) trained one epoch with Adam, dense vs TT. Then tensorly-torch's
``FactorizedLinear`` (TT-matrix, ``blocktt``, its factorized and reconstructed implementations) side by side with
TTLinear, if tensorly-torch is installed (``pip install --no-deps tensorly-torch``).

``--fit`` times every candidate plan on a grid of shapes and refits the cost model's constants by non-negative
least squares, printing them and the predicted vs measured winner per configuration.

    python benchmarks/bench_tt.py                 # full table, network epoch, tensorly-torch; writes JSON
    python benchmarks/bench_tt.py --quick         # ranks 1, 4, 16; batches 1, 256
    python benchmarks/bench_tt.py --fit           # refit the cost model
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchjson import version_of, write_result  # noqa: E402
from overparam.models.tt import TTLinear  # noqa: E402
from overparam.models.tt_contract import (PATHS, CostModel, candidate_plans, choose_plan,  # noqa: E402
                                          clear_plan_cache, plan_cost, plan_counts)

MODES = [4, 8, 4, 8]
RANKS = [1, 2, 3, 4, 6, 8, 12, 16]
BATCHES = [1, 32, 256, 1024]


# ---------------------------------------------------------------------------------------------- timing
def round_robin(fns: dict, reps: int, target: float = 2e-3, give_up: float = 20.0) -> dict[str, float]:
    """Fastest seconds per call of every function, timed in alternation; each timing repeats a call until it
    spans ``target`` seconds. A function ``give_up`` times slower than the best after the first round is timed
    no more (its first time stands: it cannot be the fastest)."""
    inner, best = {}, {}
    for name, fn in fns.items():
        fn()                                                   # warm-up (plan choice, allocations)
        t0 = time.perf_counter()
        fn()
        inner[name] = max(1, int(target / max(time.perf_counter() - t0, 1e-7)))
        best[name] = math.inf
    for rep in range(reps):
        for name, fn in fns.items():
            if rep and best[name] > give_up * min(best.values()):
                continue
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / inner[name])
    return best


def infer_fn(layer: nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            layer(x)
    return run


def train_fn(layer: nn.Module, x: torch.Tensor):
    """One SGD step of ``layer`` on the loss <layer(x), g> (a fixed output gradient g): the layer's forward,
    its backward to every parameter (the input needs no gradient, as for a first layer) and the update."""
    opt = torch.optim.SGD(layer.parameters(), lr=1e-9)
    g = torch.randn(x.shape[0], layer.out_features)

    def step():
        opt.zero_grad(set_to_none=True)
        layer(x).backward(g)
        opt.step()
    return step


def tt_layer(rank: int, contraction) -> TTLinear:
    torch.manual_seed(0)
    return TTLinear(MODES, MODES, rank, contraction=contraction)


# ---------------------------------------------------------------------------------------------- the layer table
def layer_rows(ranks, batches, reps: int) -> list[dict]:
    n = math.prod(MODES)
    torch.manual_seed(0)
    dense = nn.Linear(n, n)
    rows = []
    head = (f"{'rank':>4}{'batch':>6}{'params x':>9}{'FLOPs x':>8} | {'mode':<6}{'dense ms':>9}{'TT ms':>8}"
            f"{'dense/TT':>9} | {'auto chose':<22}{'fastest measured':<22}{'auto/best':>9}")
    print(head)
    for r in ranks:
        for b in batches:
            x = torch.randn(b, n)
            ref = tt_layer(r, "auto")
            # the best plan of every path (by the model), for this mode; auto's plan is one of them
            for mode in ("infer", "train"):
                train = mode == "train"
                make = train_fn if train else infer_fn
                plans = {p: choose_plan(MODES, MODES, ref.ranks, b, p, train) for p in PATHS}
                fns = {"dense": make(dense, x), "auto": make(tt_layer(r, "auto"), x)}
                fns.update({str(plan): make(tt_layer(r, plan), x) for plan in set(plans.values())})
                t = round_robin(fns, reps)
                auto = ref.plan(b, train)
                plan_times = {k: v for k, v in t.items() if k not in ("dense", "auto")}
                fastest = min(plan_times, key=plan_times.get)
                row = {"rank": r, "batch": b, "mode": mode, "params_ratio": ref.compression(),
                       "flop_ratio": ref.dense_flops(b) / ref.flops(b), "dense_ms": 1e3 * t["dense"],
                       "tt_ms": 1e3 * t["auto"], "speed_ratio": t["dense"] / t["auto"], "auto_plan": str(auto),
                       "fastest_plan": fastest, "auto_over_best": t["auto"] / plan_times[fastest],
                       "plan_ms": {k: 1e3 * v for k, v in plan_times.items()},
                       "predicted_ms": {k: 1e3 * plan_cost(p, MODES, MODES, ref.ranks, b, train)
                                        for k, p in ((str(p), p) for p in set(plans.values()))}}
                rows.append(row)
                print(f"{r:>4}{b:>6}{row['params_ratio']:>9.1f}{row['flop_ratio']:>8.2f} | {mode:<6}"
                      f"{row['dense_ms']:>9.3f}{row['tt_ms']:>8.3f}{row['speed_ratio']:>8.2f}x | "
                      f"{str(auto):<22}{fastest:<22}{row['auto_over_best']:>8.2f}x", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- cost model fit
def fit(ranks, batches, reps: int) -> CostModel:
    """Time every candidate plan (inference and training) and fit the model's four constants by NNLS."""
    import numpy as np
    from scipy.optimize import nnls

    n = math.prod(MODES)
    feats, secs, cases = [], [], []
    for r in ranks:
        for b in batches:
            x = torch.randn(b, n)
            for train in (False, True):
                make = train_fn if train else infer_fn
                plans = candidate_plans(MODES, MODES)
                t = round_robin({str(p): make(tt_layer(r, p), x) for p in plans}, reps)
                ranks_full = tt_layer(r, "auto").ranks
                for p in plans:
                    c = plan_counts(p, MODES, MODES, ranks_full, b, train)
                    # the layer adds the bias, and a training step zeroes grads and updates: a fixed few kernels
                    feats.append([c.macs, c.gemm_moved, c.copy_moved, c.kernels])
                    secs.append(t[str(p)])
                cases.append((r, b, train, plans, t))
                print(f"  timed r={r} b={b} {'train' if train else 'infer'}: fastest {min(t, key=t.get)}",
                      flush=True)
    A, y = np.array(feats, dtype=float), np.array(secs)
    # relative error matters (a 50 us plan and a 50 ms plan count alike): weight each row by 1 / its time
    w = 1.0 / y
    coef, _ = nnls(A * w[:, None], y * w)
    inv = [1 / c if c > 0 else math.inf for c in coef[:3]]
    model = CostModel(gemm_rate=inv[0], gemm_bandwidth=inv[1], copy_bandwidth=inv[2], overhead=float(coef[3]))
    print(f"fitted: {model}")
    hits = 0
    for r, b, train, plans, t in cases:
        ranks_full = tt_layer(r, "auto").ranks
        pred = min(plans, key=lambda p: plan_cost(p, MODES, MODES, ranks_full, b, train, model=model))
        best = min(t, key=t.get)
        hits += str(pred) == best
        print(f"  r={r:>2} b={b:>4} {'train' if train else 'infer'}: predicted {str(pred):<22} measured "
              f"{best:<22} predicted plan / best = {t[str(pred)] / t[best]:.2f}x")
    print(f"predicted winner = measured winner in {hits}/{len(cases)} configurations")
    return model


# ---------------------------------------------------------------------------------------------- whole network
def network_rows(reps: int) -> list[dict]:
    """One epoch of Adam on MNIST-1D, the tensorized study's paper architecture, dense vs TT at several ranks."""
    from overparam.data import load_dataset
    from overparam.models import MLP
    from overparam.studies.tensorized import tt_mlp

    data = load_dataset("mnist1d")
    X, y = data.X_train.float(), data.y_train
    width, depth, d = 512, 2, 3
    rows = []
    for batch in (64, 256):
        nets = {"dense": lambda: MLP(X.shape[1], [width] * depth, 10)}
        for r in (1, 4, 8, 16):
            nets[f"TT r={r}"] = (lambda r=r: tt_mlp(X.shape[1], width, depth, 10, d, r, tt_input=False))
        fns = {}
        for name, make in nets.items():
            torch.manual_seed(0)
            net = make()
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)

            def epoch(net=net, opt=opt):
                for i in range(0, len(X), batch):
                    loss = nn.functional.cross_entropy(net(X[i:i + batch]), y[i:i + batch])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            fns[name] = epoch
        t = round_robin(fns, max(2, reps // 3), target=0.0)
        for name, sec in t.items():
            rows.append({"network": name, "batch": batch, "epoch_s": sec, "speed_ratio": t["dense"] / sec})
            print(f"  epoch, batch {batch:>4}, {name:<9}: {sec:7.3f} s   dense/this {t['dense'] / sec:5.2f}x",
                  flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- tensorly-torch
def tltorch_rows(ranks, reps: int) -> list[dict]:
    try:
        import tltorch
    except ImportError:
        print("tensorly-torch not installed: skipped (pip install --no-deps tensorly-torch)")
        return []
    n, b = math.prod(MODES), 256
    x = torch.randn(b, n)
    rows = []
    for r in ranks:
        for mode in ("infer", "train"):
            make = train_fn if mode == "train" else infer_fn
            fns = {"TTLinear auto": make(tt_layer(r, "auto"), x)}
            for impl in ("factorized", "reconstructed"):
                torch.manual_seed(0)
                peer = tltorch.FactorizedLinear(MODES, MODES, factorization="blocktt", rank=[1, r, r, r, 1],
                                                implementation=impl)
                peer.out_features = n
                fns[f"tltorch {impl}"] = make(peer, x)
            t = round_robin(fns, reps)
            for name, sec in t.items():
                rows.append({"rank": r, "batch": b, "mode": mode, "layer": name, "ms": 1e3 * sec,
                             "peer_over_ours": sec / t["TTLinear auto"]})
            print(f"  r={r:>2} b={b} {mode:<5}: " + "  ".join(
                f"{k} {1e3 * v:7.3f} ms" for k, v in t.items()), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ranks 1, 4, 16 and batches 1, 256 only")
    ap.add_argument("--fit", action="store_true", help="time every plan and refit the cost model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--skip", nargs="*", default=[], choices=("layer", "network", "tltorch"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clear_plan_cache()
    ranks, batches = ([1, 4, 16], [1, 256]) if args.quick else (RANKS, BATCHES)
    print(f"torch threads: {torch.get_num_threads()}; layer 1024 x 1024, modes {MODES} x {MODES}; "
          f"times = fastest of {args.reps} alternating rounds")
    if args.fit:
        fit(ranks if args.quick else [1, 2, 4, 8, 16], batches, args.reps)
        return
    rows, ratios = [], {}
    if "layer" not in args.skip:
        rows += layer_rows(ranks, batches, args.reps)
        for row in rows:
            ratios[f"dense/TT r={row['rank']} b={row['batch']} {row['mode']}"] = row["speed_ratio"]
        for row in rows:
            if row["flop_ratio"] >= 4 and row["batch"] == 256:
                print(f"RATIO dense time / TT time, rank {row['rank']} ({row['flop_ratio']:.1f}x fewer FLOPs), "
                      f"batch 256, {row['mode']}: {row['speed_ratio']:.2f}x")
        worst = max(rows, key=lambda row: row["auto_over_best"])
        print(f"auto vs the fastest measured plan: worst {worst['auto_over_best']:.2f}x "
              f"(rank {worst['rank']}, batch {worst['batch']}, {worst['mode']})")
    if "network" not in args.skip:
        print("whole network (tensorized study, MNIST-1D 40-512-512-10, modes 8x8x8), one epoch of Adam:")
        net = network_rows(args.reps)
        rows += [{"kind": "network", **r} for r in net]
        ratios.update({f"network epoch dense/{r['network']} b={r['batch']}": r["speed_ratio"] for r in net
                       if r["network"] != "dense"})
    if "tltorch" not in args.skip:
        print("tensorly-torch FactorizedLinear (blocktt) vs TTLinear, batch 256:")
        peer = tltorch_rows(ranks if args.quick else [1, 4, 8, 16], args.reps)
        rows += [{"kind": "tltorch", **r} for r in peer]
        ratios.update({f"tltorch/TTLinear r={r['rank']} {r['mode']} {r['layer'][8:]}": r["peer_over_ours"]
                       for r in peer if r["layer"].startswith("tltorch")})
    path = write_result("bench_tt", rows, ratios, peers={"tensorly-torch": version_of("tensorly-torch"),
                                                         "opt_einsum": version_of("opt_einsum")},
                        notes=f"torch threads {args.threads}; ratios > 1: dense (or peer) slower than TTLinear")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
