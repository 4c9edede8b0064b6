"""Ensemble engine vs a sequential loop: the same 32 MLPs (40-64-64-10, width 64) on MNIST-1D.

Both sides train the same replicas (same inits, same per-replica data order, SGD momentum 0.9,
batch 100) for the same number of steps; the ensemble's results equal the sequential ones to float
tolerance (tests/test_ensemble.py). Prints the throughput ratio (issue target: >= 8x on 2 cores).
"""

import time

import torch

from overparam.data import corrupt, load_dataset
from overparam.models import MLP, seeded
from overparam.train import TrainConfig, train, train_ensemble

REPLICAS, WIDTH, EPOCHS = 32, 64, 2


def main() -> None:
    data = corrupt(load_dataset("mnist1d"), "label_noise", p=0.15, seed=0)
    X, y = data.X_train, data.y_train
    cfg = TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=100, epochs=EPOCHS, eval_every=10**9)
    build = lambda: MLP(40, [WIDTH, WIDTH], 10)  # noqa: E731
    seeds = list(range(REPLICAS))
    print(f"torch threads: {torch.get_num_threads()}; {REPLICAS} replicas x {EPOCHS} epochs x "
          f"{len(X) // cfg.batch_size} steps")

    t0 = time.perf_counter()
    seq_final = []
    for s in seeds:
        h = train(seeded(build, s), X, y, TrainConfig(**{**cfg.__dict__, "seed": 1000 + s}), n_classes=10)
        seq_final.append(h.train_loss[-1])
    t_seq = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, hist = train_ensemble(build, seeds, X, y, cfg, n_classes=10, data_seeds=[1000 + s for s in seeds])
    t_ens = time.perf_counter() - t0
    diff = max(abs(a - b) for a, b in zip(seq_final, hist.final()["train_loss"]))

    steps = REPLICAS * EPOCHS * (len(X) // cfg.batch_size)
    print(f"{'method':<22}{'seconds':>10}{'replica-steps/s':>18}")
    print(f"{'sequential train()':<22}{t_seq:>10.2f}{steps / t_seq:>18.0f}")
    print(f"{'vmap ensemble':<22}{t_ens:>10.2f}{steps / t_ens:>18.0f}")
    print(f"max |final loss difference| = {diff:.2e}")
    print(f"RATIO ensemble throughput / sequential = {t_seq / t_ens:.1f}x (target >= 8x)")


if __name__ == "__main__":
    main()
