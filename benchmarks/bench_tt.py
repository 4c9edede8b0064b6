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

``--fit`` times every candidate plan on a grid of ranks and batches (written to ``results/bench_tt_plans.json``)
and refits the cost model's constants by non-negative least squares, printing them and the predicted vs measured
winner per configuration; ``--refit FILE`` refits from such a file.

    python benchmarks/bench_tt.py                 # full table, network epoch, tensorly-torch; writes JSON
    python benchmarks/bench_tt.py --quick         # ranks 1, 4, 16; batches 1, 256
    python benchmarks/bench_tt.py --fit           # refit the cost model
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchjson import version_of, write_result  # noqa: E402
from overparam.models.tt import TTLinear  # noqa: E402
from overparam.models.tt_contract import (PATHS, CostModel, Plan, candidate_plans, choose_plan,  # noqa: E402
                                          clear_plan_cache, plan_cost, plan_counts)

MODES = [4, 8, 4, 8]
RANKS = [1, 2, 3, 4, 6, 8, 12, 16]
BATCHES = [1, 32, 256, 1024]


# ---------------------------------------------------------------------------------------------- timing
def round_robin(fns: dict, reps: int, target: float = 2e-3, give_up: float = 10.0) -> dict[str, float]:
    """Fastest seconds per call of every function, timed in alternation; each timing repeats a call until it
    spans ``target`` seconds. A function still ``give_up`` times slower than the best after three rounds is timed
    no more (its time stands: it cannot be the fastest)."""
    inner, best = {}, {}
    for name, fn in fns.items():
        fn()                                                   # warm-up (plan choice, allocations)
        t0 = time.perf_counter()
        fn()
        inner[name] = max(1, int(target / max(time.perf_counter() - t0, 1e-7)))
        best[name] = math.inf
    for rep in range(reps):
        for name, fn in fns.items():
            if rep >= 3 and best[name] > give_up * min(best.values()):
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


def tt_layer(rank: int, contraction, modes=MODES) -> TTLinear:
    torch.manual_seed(0)
    return TTLinear(modes, modes, rank, contraction=contraction)


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
                auto = ref.plan(b, train)
                plans = {p: choose_plan(MODES, MODES, ref.ranks, b, p, train) for p in PATHS}
                # auto's layer stands for its own plan (its choice is a cached look-up): one timing per plan
                fns = {"dense": make(dense, x), "auto": make(tt_layer(r, "auto"), x)}
                fns.update({str(plan): make(tt_layer(r, plan), x) for plan in set(plans.values()) if plan != auto})
                t = round_robin(fns, reps)
                plan_times = {(str(auto) if k == "auto" else k): v for k, v in t.items() if k != "dense"}
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
def time_every_plan(modes, ranks, batches, reps: int) -> list[dict]:
    """Seconds of every candidate plan, inference and training step, per (rank, batch), ``modes`` on both sides."""
    n = math.prod(modes)
    rows = []
    for r in ranks:
        for b in batches:
            x = torch.randn(b, n)
            for train in (False, True):
                make = train_fn if train else infer_fn
                plans = candidate_plans(modes, modes)
                t = round_robin({str(p): make(tt_layer(r, p, modes), x) for p in plans}, reps)
                rows += [{"modes": modes, "rank": r, "batch": b, "train": train, "path": p.path,
                          "groups": list(p.groups), "reverse": p.reverse, "plan": str(p), "seconds": t[str(p)]}
                         for p in plans]
                print(f"  timed {modes} r={r} b={b} {'train' if train else 'infer'}: fastest {min(t, key=t.get)}",
                      flush=True)
    return rows


def fit(rows: list[dict]) -> CostModel:
    """The cost model's five constants by non-negative least squares on relative error, then its predicted winner
    against the measured one in every configuration."""
    import numpy as np
    from scipy.optimize import nnls

    def plan_of(row):
        return Plan(row["path"], tuple(row["groups"]), row["reverse"])

    def counts(row):
        modes = row.get("modes", MODES)
        ranks = tt_layer(row["rank"], "auto", modes).ranks
        return plan_counts(plan_of(row), modes, modes, ranks, row["batch"], row["train"])

    A = np.array([[c.macs, c.cached, c.spilled, c.kernels, c.runs] for c in map(counts, rows)], dtype=float)
    y = np.array([row["seconds"] for row in rows])
    w = 1.0 / y                      # a 50 us plan and a 50 ms plan count alike
    coef, _ = nnls(A * w[:, None], y * w)
    inv = [float(1 / c) if c > 0 else math.inf for c in coef[:3]]
    model = CostModel(gemm_rate=inv[0], cache_bandwidth=inv[1], memory_bandwidth=inv[2], overhead=float(coef[3]),
                      run_overhead=float(coef[4]))
    print(f"fitted: {model}")
    cases: dict[tuple, list[dict]] = {}
    for row in rows:
        cases.setdefault((tuple(row.get("modes", MODES)), row["rank"], row["batch"], row["train"]), []).append(row)
    hits, worst = 0, 1.0
    for (modes, r, b, train), group in cases.items():
        ranks = tt_layer(r, "auto", modes).ranks
        pred = min(group, key=lambda row: plan_cost(plan_of(row), modes, modes, ranks, b, train, model=model))
        best = min(group, key=lambda row: row["seconds"])
        hits += pred is best
        worst = max(worst, pred["seconds"] / best["seconds"])
        print(f"  {'x'.join(map(str, modes))} r={r:>2} b={b:>4} {'train' if train else 'infer'}: predicted "
              f"{pred['plan']:<22} measured {best['plan']:<22} predicted plan / best = "
              f"{pred['seconds'] / best['seconds']:.2f}x")
    print(f"predicted winner = measured winner in {hits}/{len(cases)} configurations; "
          f"worst predicted plan / best = {worst:.2f}x")
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
                peer = tltorch.FactorizedLinear(tuple(MODES), tuple(MODES), factorization="blocktt",
                                                rank=[1, r, r, r, 1], implementation=impl)
                with torch.no_grad():                          # the same map: x W^T + b of its TT matrix
                    err = float((peer(x) - (x @ peer.weight.to_matrix().T + peer.bias)).abs().max())
                assert err < 1e-3, err
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
    ap.add_argument("--refit", metavar="JSON", help="refit the cost model from a bench_tt_plans.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--skip", nargs="*", default=[], choices=("layer", "network", "tltorch"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clear_plan_cache()
    ranks, batches = ([1, 4, 16], [1, 256]) if args.quick else (RANKS, BATCHES)
    print(f"torch threads: {torch.get_num_threads()}; layer 1024 x 1024, modes {MODES} x {MODES}; "
          f"times = fastest of {args.reps} alternating rounds")
    if args.refit:
        fit(json.loads(Path(args.refit).read_text())["rows"])
        return
    if args.fit:
        rows = time_every_plan(MODES, ranks if args.quick else [1, 2, 4, 8, 16], batches, args.reps)
        rows += time_every_plan([8, 8, 8], [1, 4, 16] if args.quick else [1, 2, 4, 8, 16], batches, args.reps)
        print(f"wrote {write_result('bench_tt_plans', rows, notes=f'torch threads {args.threads}')}")
        fit(rows)
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
