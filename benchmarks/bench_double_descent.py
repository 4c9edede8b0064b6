"""The MNIST-1D double-descent paper sweep: overparam vs the MNIST-1D notebook's sequential loop.

Both train MLP 40-h-h-10 for widths 2..300 (the `paper` preset's 17 widths), 15% label noise,
SGD lr 0.01 momentum 0.9 batch 100, 4000 training examples, 1 seed, for EPOCHS epochs (500 in the paper).

The peer is the training loop of the MNIST-1D double-descent notebook (greydanus/mnist1d,
notebooks/6. deep_double_descent.ipynb, `fit_model`), one width after another: He-uniform init, a
shuffling DataLoader over a TensorDataset, and after every epoch the train and test error and loss on
the whole sets (as the notebook does, with autograd on). A second, leaner peer drops the DataLoader and
the per-epoch statistics (a hand-tuned loop slicing tensors), to show how much of the gap is the
notebook's own overhead. Each peer runs at its faster torch thread count (1 or 2, probed on one epoch).
overparam trains the widths in padded vmap groups, one group per core (overparam.train.widths).
Issue targets: ratio >= 4x against the notebook loop, overparam under 5 minutes.

    python benchmarks/bench_double_descent.py [EPOCHS] [--no-lean]
"""

import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from overparam.config import resolve_config
from overparam.data import corrupt, load_dataset
from overparam.studies.base import RunContext
from overparam.studies.double_descent import PRESETS, DoubleDescentConfig, run
from overparam.train.parallel import available_cores, keep_freed_memory


def notebook_model(h: int) -> nn.Module:
    model = nn.Sequential(nn.Linear(40, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10))
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight)
            layer.bias.data.fill_(0.0)
    return model


def notebook_loop(X, y, Xt, yt, widths, epochs, seed=0):
    """The notebook's fit_model for each width in turn; returns the final test errors."""
    errors = []
    for h in widths:
        torch.manual_seed(seed)
        model = notebook_model(h)
        loss_function = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loader = DataLoader(TensorDataset(X, y), batch_size=100, shuffle=True)
        for _ in range(epochs):
            for x_batch, y_batch in loader:
                optimizer.zero_grad()
                loss = loss_function(model(x_batch), y_batch)
                loss.backward()
                optimizer.step()
            pred_train, pred_test = model(X), model(Xt)
            errors_train = 100 - 100 * (pred_train.data.argmax(1) == y).float().sum() / len(y)
            errors_test = 100 - 100 * (pred_test.data.argmax(1) == yt).float().sum() / len(yt)
            # the notebook computes these every epoch (and prints them every 100)
            losses_train, losses_test = loss_function(pred_train, y).item(), loss_function(pred_test, yt).item()
        errors.append(float(errors_test) / 100)
    return errors


def lean_loop(X, y, Xt, yt, widths, epochs, seed=0):
    """The same training with no DataLoader and no per-epoch statistics."""
    errors = []
    for h in widths:
        torch.manual_seed(seed)
        model = notebook_model(h)
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


def best_threads(loop, data, widths) -> tuple[int, dict]:
    """The faster torch thread count for ``loop`` over one epoch of the smallest and largest width."""
    times = {}
    for threads in sorted({1, min(2, available_cores())}):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        loop(*data, [widths[0], widths[-1]], 1)
        times[threads] = time.perf_counter() - t0
    return min(times, key=times.get), times


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    epochs = int(args[0]) if args else 500
    lean = "--no-lean" not in sys.argv
    keep_freed_memory()  # one process-wide malloc setting, applied before every side runs
    cfg = resolve_config(DoubleDescentConfig, PRESETS, "paper", sets={"epochs": epochs})
    data = corrupt(load_dataset("mnist1d"), "label_noise", p=cfg.label_noise, seed=cfg.seed)
    arrays = (data.X_train, data.y_train, data.X_test, data.y_test)
    print(f"widths {cfg.widths}, {epochs} epochs, {available_cores()} cores", flush=True)

    t0 = time.perf_counter()
    ours = run(cfg, RunContext())
    t_ours = time.perf_counter() - t0
    print(f"overparam double-descent (paper preset, {available_cores()} cores): {t_ours:.1f} s", flush=True)

    peers = [("notebook loop", notebook_loop)] + ([("lean loop", lean_loop)] if lean else [])
    results = {}
    for name, loop in peers:
        threads, probe = best_threads(loop, arrays, cfg.widths)
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        errs = loop(*arrays, cfg.widths, epochs)
        results[name] = (time.perf_counter() - t0, errs)
        print(f"{name} ({threads} torch thread(s); probe " + ", ".join(f"{t}: {s:.2f}s" for t, s in probe.items())
              + f"): {results[name][0]:.1f} s", flush=True)

    print(f"{'h':>5}{'overparam':>12}" + "".join(f"{name:>16}" for name in results) + "   (test error)")
    for i, h in enumerate(cfg.widths):
        print(f"{h:>5}{ours.metrics['test_error'][i]:>12.3f}" + "".join(f"{r[1][i]:>16.3f}" for r in results.values()))
    for name, (t_peer, _) in results.items():
        target = " (target >= 4x)" if name == "notebook loop" else ""
        print(f"RATIO {name} / overparam = {t_peer / t_ours:.2f}x{target}")
    print(f"overparam {t_ours / 60:.2f} min (target < 5 min at 500 epochs)")


if __name__ == "__main__":
    main()
