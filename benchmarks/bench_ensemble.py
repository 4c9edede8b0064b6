"""Ensemble engine vs a sequential loop: the same 32 MLPs (40-64-64-10, width 64) on MNIST-1D.

Both sides train the same replicas (same inits, same per-replica data order, SGD momentum 0.9,
batch 100) for the same number of steps; the ensemble's results equal the sequential ones to float
tolerance (tests/test_ensemble.py, tests/test_fused_step.py). The sequential loop runs at its faster
torch thread count (1 or 2, probed first); the engine runs one stacked ensemble on every core (torch
intra-op threads; ReLU MLPs take the hand-derived step of overparam.train.fused). Both are warmed up
first. Prints the throughput ratio (target >= 8x on 2 cores).

    python benchmarks/bench_ensemble.py [EPOCHS]
"""

import sys
import time

import torch

from overparam.data import corrupt, load_dataset
from overparam.models import MLP, seeded
from overparam.train import TrainConfig, train, train_ensemble
from overparam.train.parallel import available_cores

REPLICAS, WIDTH = 32, 64


def sequential(build, seeds, X, y, cfg):
    return [train(seeded(build, s), X, y, TrainConfig(**{**cfg.__dict__, "seed": 1000 + s}), n_classes=10)
            for s in seeds]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    data = corrupt(load_dataset("mnist1d"), "label_noise", p=0.15, seed=0)
    X, y = data.X_train, data.y_train
    cfg = TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=100, epochs=epochs, eval_every=10**9)
    build = lambda: MLP(40, [WIDTH, WIDTH], 10)  # noqa: E731
    seeds = list(range(REPLICAS))
    cores = available_cores()

    probe = TrainConfig(**{**cfg.__dict__, "epochs": 1})
    speed = {}
    for threads in sorted({1, min(2, cores)}):
        torch.set_num_threads(threads)
        sequential(build, seeds[:2], X, y, probe)                      # warm-up
        speed[threads] = timed(lambda: sequential(build, seeds[:4], X, y, probe))[0]
    seq_threads = min(speed, key=speed.get)
    torch.set_num_threads(seq_threads)
    print(f"{REPLICAS} replicas x {epochs} epochs x {len(X) // cfg.batch_size} steps; sequential loop on "
          f"{seq_threads} torch thread(s) (probe: " + ", ".join(f"{t} -> {s:.2f}s" for t, s in speed.items())
          + f"); ensemble on {cores} core(s)", flush=True)
    t_seq, seq = timed(lambda: sequential(build, seeds, X, y, cfg))

    ens_seeds = [1000 + s for s in seeds]
    train_ensemble(build, seeds[:4], X, y, probe, n_classes=10, data_seeds=ens_seeds[:4], workers=cores)  # warm-up
    t_ens, (_, hist) = timed(lambda: train_ensemble(build, seeds, X, y, cfg, n_classes=10, data_seeds=ens_seeds,
                                                    workers=cores))
    diff = max(abs(h.train_loss[-1] - b) for h, b in zip(seq, hist.final()["train_loss"]))

    steps = REPLICAS * epochs * (len(X) // cfg.batch_size)
    print(f"{'method':<28}{'seconds':>10}{'replica-steps/s':>18}")
    print(f"{'sequential train()':<28}{t_seq:>10.2f}{steps / t_seq:>18.0f}")
    print(f"{f'ensemble on {cores} core(s)':<28}{t_ens:>10.2f}{steps / t_ens:>18.0f}")
    print(f"max |final loss difference| = {diff:.2e}")
    print(f"RATIO ensemble throughput / sequential = {t_seq / t_ens:.1f}x (target >= 8x)")


if __name__ == "__main__":
    main()
