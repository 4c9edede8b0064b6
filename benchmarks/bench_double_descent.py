"""The MNIST-1D double-descent paper sweep: overparam vs a sequential loop in the notebook's style.

Both train MLP 40-h-h-10 for widths 2..300 (the `paper` preset's 17 widths), 15% label noise,
SGD lr 0.01 momentum 0.9 batch 100, 4000 training examples, 1 seed. The peer is the plain PyTorch
loop of the MNIST-1D notebook (one model after another); overparam trains the widths in padded vmap
groups (overparam.train.widths). Issue targets: ratio >= 4x, overparam under 5 minutes.

    python benchmarks/bench_double_descent.py [EPOCHS]     # default 500, the paper's setup
"""

import sys
import time

import torch
from torch import nn

from overparam.config import resolve_config
from overparam.data import corrupt, load_dataset
from overparam.studies.base import RunContext
from overparam.studies.double_descent import PRESETS, DoubleDescentConfig, run


def notebook_style(X, y, Xt, yt, widths, epochs, seed=0):
    """One model after another, as in the MNIST-1D notebook's training loop."""
    errors = []
    for h in widths:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(40, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for _ in range(epochs):
            perm = torch.randperm(len(X))
            for i in range(0, len(X), 100):
                idx = perm[i:i + 100]
                loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            errors.append(float((model(Xt).argmax(1) != yt).float().mean()))
    return errors


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    torch.set_num_threads(threads)  # both sides alike; small MLPs on 2 cores run best on one thread
    cfg = resolve_config(DoubleDescentConfig, PRESETS, "paper", sets={"epochs": epochs})
    data = corrupt(load_dataset("mnist1d"), "label_noise", p=cfg.label_noise, seed=cfg.seed)
    print(f"widths {cfg.widths}, {epochs} epochs, torch threads {torch.get_num_threads()}", flush=True)

    t0 = time.perf_counter()
    ours = run(cfg, RunContext())
    t_ours = time.perf_counter() - t0
    print(f"overparam double-descent (paper preset): {t_ours:.1f} s", flush=True)

    t0 = time.perf_counter()
    peer = notebook_style(data.X_train, data.y_train, data.X_test, data.y_test, cfg.widths, epochs)
    t_peer = time.perf_counter() - t0
    print(f"notebook-style sequential loop:          {t_peer:.1f} s", flush=True)

    print(f"{'h':>5}{'overparam test err':>20}{'notebook test err':>20}")
    for h, a, b in zip(cfg.widths, ours.metrics["test_error"], peer):
        print(f"{h:>5}{a:>20.3f}{b:>20.3f}")
    print(f"RATIO notebook loop / overparam = {t_peer / t_ours:.2f}x (target >= 4x); "
          f"overparam {t_ours / 60:.1f} min (target < 5 min)")


if __name__ == "__main__":
    main()
