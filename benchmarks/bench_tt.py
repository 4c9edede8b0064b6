"""TTLinear vs nn.Linear: a 1024 x 1024 layer (modes 4x8x4x8 on both sides), TT ranks 4, 8, 16.

Both sides run in the same process, on the same input, one thread: inference (forward under no_grad) at batch 1 and
batch 256, and a training step (forward, cross-entropy-free squared loss, backward, SGD step) at batch 256. Each
time is the fastest of several repetitions. Prints the parameter and FLOP ratios (dense / TT) next to the measured
speed ratios (dense time / TT time; > 1 means the TT layer is faster). The TT output equals x @ W + b of the weight
its cores represent (tests/test_tt.py); the max difference is printed as a sanity check.
"""

import math
import time

import torch
from torch import nn

from overparam.models.tt import TTLinear

MODES, RANKS, BATCHES, REPS = [4, 8, 4, 8], [4, 8, 16], [1, 256], 15


def fastest(fn, reps: int = REPS, inner: int = 1) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def infer_time(layer: nn.Module, x: torch.Tensor) -> float:
    def run():
        with torch.no_grad():
            layer(x)
    return fastest(run, inner=50 if len(x) == 1 else 2)


def train_time(layer: nn.Module, x: torch.Tensor) -> float:
    opt = torch.optim.SGD(layer.parameters(), lr=1e-6)

    def step():
        loss = layer(x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return fastest(step, inner=2)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n = math.prod(MODES)
    dense = nn.Linear(n, n)
    print(f"torch threads: {torch.get_num_threads()}; layer {n} x {n}, modes {MODES} x {MODES}; "
          f"times = fastest of {REPS}")
    xs = {b: torch.randn(b, n) for b in BATCHES}
    t_dense = {("infer", b): infer_time(dense, xs[b]) for b in BATCHES}
    t_dense[("train", 256)] = train_time(dense, xs[256])
    head = f"{'layer':<14}{'params':>9}{'x fewer':>8}{'FLOP x':>8}"
    cols = [("infer", 1), ("infer", 256), ("train", 256)]
    head += "".join(f"{f'{k} b={b} ms':>17}" for k, b in cols)
    print(head)
    print(f"{'nn.Linear':<14}{n * n + n:>9}{1.0:>8.1f}{1.0:>8.1f}"
          + "".join(f"{1e3 * t_dense[c]:>17.3f}" for c in cols))
    ratios = []
    for r in RANKS:
        tt = TTLinear(MODES, MODES, r)
        x = xs[256]
        with torch.no_grad():
            diff = float((tt(x) - (x @ tt.full_weight() + tt.bias)).abs().max())
        t_tt = {("infer", b): infer_time(tt, xs[b]) for b in BATCHES}
        t_tt[("train", 256)] = train_time(tt, x)
        print(f"{f'TT rank {r}':<14}{tt.parameter_count():>9}{tt.compression():>8.1f}"
              f"{tt.dense_flops() / tt.flops():>8.2f}" + "".join(f"{1e3 * t_tt[c]:>17.3f}" for c in cols)
              + f"   (max |TT - dense of its cores| = {diff:.1e})")
        ratios.append((r, [t_dense[c] / t_tt[c] for c in cols]))
    for r, rs in ratios:
        print(f"RATIO dense time / TT time, rank {r}: inference batch 1 {rs[0]:.2f}x, inference batch 256 "
              f"{rs[1]:.2f}x, training step batch 256 {rs[2]:.2f}x")


if __name__ == "__main__":
    main()
