"""Tensorized MLPs: test accuracy vs compression for TT layers trained from scratch or obtained by TT-SVD.

Novikov et al. 2015 ("Tensorizing neural networks") store fully connected weights in tensor-train matrix format
and train the cores directly: large compression of the layers at a small accuracy loss. Hawkins & Zhang 2019 report
7.4x-137x smaller tensorized models. The alternative route compresses a trained dense net by TT-SVD (Oseledets 2011)
and fine-tunes (the compress-then-fine-tune recipe of Lebedev et al. 2015 for CP decompositions).

Here: an ``in-h-h-out`` ReLU MLP on MNIST-1D or digits. Its hidden layers (``in x h`` and ``h x h``) become
:class:`~overparam.models.tt.TTLinear` layers with ``d`` balanced modes and one TT rank ``r`` per run; the output
layer stays dense (as in Novikov et al.). For every rank: (a) the TT net trained from scratch with the dense net's
budget, (b) the trained dense net's hidden layers compressed by TT-SVD, evaluated as is, and (c) (b) fine-tuned.
Compression is reported in parameters and in forward multiply-adds of the whole net; training-step and inference
times are measured against the dense net on this machine (one thread).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import load_dataset
from overparam.models import MLP, count_parameters
from overparam.models.tt import TTLinear, factorize
from overparam.studies.base import (Check, DATASET_SHAPES, MAX_EPOCHS, MAX_EXAMPLES, MAX_WIDTH, RunContext, Study,
                                    StudyResult, data_bytes, fmt, mlp_training_bytes, register)
from overparam.train import Diverged, Ensemble, TrainConfig, evaluate, loss_function, train_ensemble
from overparam.train.ensemble import fit_ensemble

NOVIKOV = "Novikov et al. 2015 (Tensorizing neural networks), Sec. 6; Hawkins & Zhang 2019 (7.4x-137x smaller)"
FINETUNE = ("Lebedev et al. 2015 (fine-tuned CP decomposition); Novikov et al. 2015 (TT layers); "
            "TT-SVD quasi-optimality, Oseledets 2011")


@dataclass
class TensorizedConfig(StudyConfig):
    dataset: str = param("digits", "training data", choices=("digits", "mnist1d"))
    n_train: int | None = param(None, "training examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    width: int = param(256, "hidden width h of the in-h-h-out MLP", min=2, max=MAX_WIDTH)
    depth: int = param(2, "number of hidden layers (all tensorized)", min=1, max=6)
    modes: int = param(3, "number d of TT modes per tensorized layer (balanced factorization)", min=2, max=6)
    tt_input: bool = param(True, "tensorize the input layer too (else only the h x h layers)")
    ranks: list[int] = param([1, 2, 4, 8, 16], "TT ranks r (all internal ranks of every layer)", min=1, max=4096)
    init: str = param("he", "TT core init (variance of the represented weight)", choices=("linear", "he", "xavier"))
    lr: float = param(0.002, "Adam learning rate (dense and TT from scratch)", min=1e-6, max=1.0)
    finetune_lr: float = param(0.002, "Adam learning rate of the fine-tuning after TT-SVD", min=1e-6, max=1.0)
    batch_size: int = param(64, "minibatch size", min=1, max=MAX_EXAMPLES)
    epochs: int = param(40, "epochs for the dense net and for every TT net from scratch", min=1, max=MAX_EPOCHS)
    finetune_epochs: int = param(10, "epochs of fine-tuning after TT-SVD", min=0, max=MAX_EPOCHS)
    seeds: int = param(1, "repeats (initialization and data order); accuracies are averaged", min=1, max=16)
    time_reps: int = param(20, "repetitions of each timed training step / inference pass (fastest kept)", min=1,
                           max=10_000)
    max_loss: float = param(0.02, "accuracy loss vs dense that counts as 'small' (absolute)", min=0.0, max=1.0)
    min_compression: float = param(5.0, "parameter compression that counts as 'large'", min=1.0, max=1e9)
    recover: float = param(0.5, "fraction of the TT-SVD accuracy loss fine-tuning must win back", min=0.0, max=1.0)

    def validate(self) -> None:
        if sorted(set(self.ranks)) != list(self.ranks):
            raise ConfigError("ranks: must be strictly increasing, e.g. 1,2,4,8")
        if self.width < 2 ** self.modes:
            raise ConfigError(f"width: {self.width} is too small for {self.modes} modes (need >= 2**modes)")

    def peak_bytes(self) -> dict[str, float]:
        d, k, _, _ = DATASET_SHAPES[self.dataset]
        return {**data_bytes(self.dataset, self.n_train, self.n_test),
                "width": mlp_training_bytes(2, d, [self.width] * self.depth, k, self.batch_size)}


PRESETS = {
    # digits (1257 train / 540 test), 64-256-256-10; 3 modes per layer: 64=4x4x4, 256=8x8x4.
    "quick": {"dataset": "digits", "ranks": [1, 2, 4, 8], "epochs": 15, "finetune_epochs": 10, "time_reps": 10},
    # MNIST-1D (4000 / 1000), 40-512-512-10, the 512 x 512 layer as 8x8x8 -> 8x8x8; the 40-wide input layer stays
    # dense (tensorizing it costs accuracy for little compression); 5 seeds. Run dataset=digits the same way.
    "paper": {"dataset": "mnist1d", "width": 512, "tt_input": False, "ranks": [1, 2, 4, 8, 16, 32], "epochs": 100,
              "finetune_epochs": 30, "seeds": 5, "time_reps": 50},
}


# ------------------------------------------------------------------------------------------- models
def hidden_modes(in_dim: int, width: int, depth: int, d: int,
                 tt_input: bool = True) -> list[tuple[list[int], list[int]] | None]:
    """(in_modes, out_modes) of every hidden layer (balanced factorizations into d modes); None = kept dense."""
    sizes = [in_dim] + [width] * depth
    modes = [(factorize(a, d), factorize(b, d)) for a, b in zip(sizes[:-1], sizes[1:])]
    return modes if tt_input else [None] + modes[1:]


def _copy_linear(lin: nn.Linear) -> nn.Linear:
    out = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None).to(lin.weight.dtype)
    out.load_state_dict(lin.state_dict())
    return out


def tt_mlp(in_dim: int, width: int, depth: int, out_dim: int, d: int, rank: int, init: str = "he",
           tt_input: bool = True) -> nn.Sequential:
    """The MLP with its hidden layers TTLinear of rank ``rank`` (the input layer only if tt_input); output dense."""
    layers: list[nn.Module] = []
    for k, modes in enumerate(hidden_modes(in_dim, width, depth, d, tt_input)):
        layers += [nn.Linear(in_dim if k == 0 else width, width) if modes is None
                   else TTLinear(*modes, rank, init=init), nn.ReLU()]
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def compress_mlp(mlp: MLP, d: int, rank: int, tt_input: bool = True) -> nn.Sequential:
    """TT-SVD of the hidden layers of a trained MLP (the input layer only if tt_input); the rest copied."""
    linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
    layers: list[nn.Module] = []
    for lin, modes in zip(linears[:-1], hidden_modes(mlp.in_dim, mlp.widths[0], len(mlp.widths), d, tt_input)):
        layers += [_copy_linear(lin) if modes is None else TTLinear.from_linear(lin, *modes, rank), nn.ReLU()]
    layers.append(_copy_linear(linears[-1]))
    return nn.Sequential(*layers)


def net_flops(model: nn.Module, batch: int = 1) -> int:
    """Forward multiply-adds of the linear maps (TT contractions or dense products); biases/ReLUs not counted."""
    total = 0
    for m in model.modules():
        if isinstance(m, TTLinear):
            total += m.flops(batch)
        elif isinstance(m, nn.Linear):
            total += batch * m.in_features * m.out_features
    return total


def time_model(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch: int, reps: int) -> tuple[float, ...]:
    """Seconds of one Adam training step on a minibatch of ``batch``, of one forward over all of X and of one
    forward of a single example; the fastest of ``reps`` repetitions (the least disturbed by other processes)."""
    model = model.float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xb, yb, x1 = X[:batch], y[:batch], X[:1]
    out = np.full(3, np.inf)
    for rep in range(reps + 1):                     # the first repetition is a warm-up
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        with torch.no_grad():
            model(X)
            t2 = time.perf_counter()
            for _ in range(10):
                model(x1)
        t3 = time.perf_counter()
        if rep:
            out = np.minimum(out, [t1 - t0, t2 - t1, (t3 - t2) / 10])
    return tuple(float(v) for v in out)


# ------------------------------------------------------------------------------------------- run
def run(cfg: TensorizedConfig, ctx: RunContext) -> StudyResult:
    torch.set_num_threads(1)
    data = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test)
    n_in, n_out = data.input_dim, data.n_classes
    hidden = [cfg.width] * cfg.depth
    loss_fn = loss_function("cross_entropy", n_out)
    R, S = len(cfg.ranks), cfg.seeds
    acc = np.zeros((3, R, S))                   # scratch, tt-svd, tt-svd + fine-tune
    svd_rel_err = np.zeros((R, S))              # relative Frobenius error of the hidden weights after TT-SVD
    seeds = [cfg.seed * 1009 + s for s in range(S)]
    data_seeds = [cfg.seed * 7919 + s for s in range(S)]

    def fit(ens_or_build, lr, epochs, desc):
        """Train the seeds' replicas as one vmap ensemble; return it and the final test accuracies."""
        tcfg = TrainConfig(optimizer="adam", lr=lr, batch_size=cfg.batch_size, epochs=epochs, eval_every=10**12)
        args = (data.X_train, data.y_train, tcfg, data.X_test, data.y_test, n_out)
        if isinstance(ens_or_build, Ensemble):
            ens, hist = ens_or_build, fit_ensemble(ens_or_build, *args, data_seeds, ctx.progress, desc)
        else:
            ens, hist = train_ensemble(ens_or_build, seeds, *args, data_seeds=data_seeds, progress=ctx.progress,
                                       desc=desc)
        if hist.diverged.any():
            raise Diverged(f"{desc} diverged at step {int(hist.diverged_at.max())} (lr={lr}); lower the learning rate")
        return ens, 1.0 - hist.final()["test_error"]

    dense_ens, dense_acc = fit(lambda: MLP(n_in, hidden, n_out), cfg.lr, cfg.epochs, f"dense x{S}")
    dense_nets = [dense_ens.replica(s) for s in range(S)]
    first = 0 if cfg.tt_input else 1
    dense_w = [[m.weight.detach().T for m in net.net if isinstance(m, nn.Linear)][first:-1] for net in dense_nets]
    for i, r in enumerate(cfg.ranks):
        _, acc[0, i] = fit(lambda: tt_mlp(n_in, cfg.width, cfg.depth, n_out, cfg.modes, r, cfg.init, cfg.tt_input),
                           cfg.lr, cfg.epochs, f"TT r={r} from scratch x{S} ({i + 1}/{R})")
        comps = [compress_mlp(net, cfg.modes, r, cfg.tt_input) for net in dense_nets]
        for s, (comp, ws) in enumerate(zip(comps, dense_w)):
            tts = [m for m in comp if isinstance(m, TTLinear)]
            with torch.no_grad():
                svd_rel_err[i, s] = math.sqrt(sum(float((t.full_weight() - w).norm() ** 2) for t, w in zip(tts, ws))
                                              / sum(float(w.norm() ** 2) for w in ws))
            acc[1, i, s] = 1.0 - evaluate(comp, data.X_test, data.y_test, loss_fn)[1]
        acc[2, i] = (fit(Ensemble(comps, torch.float32), cfg.finetune_lr, cfg.finetune_epochs,
                         f"TT-SVD r={r} fine-tune x{S}")[1] if cfg.finetune_epochs else acc[1, i])

    # counts and timings (one seed's architecture; counts do not depend on the weights)
    dense = MLP(n_in, hidden, n_out)
    d_params, d_flops = count_parameters(dense, trainable_only=False), net_flops(dense)
    nets = [tt_mlp(n_in, cfg.width, cfg.depth, n_out, cfg.modes, r, cfg.init, cfg.tt_input) for r in cfg.ranks]
    params = np.array([count_parameters(m, trainable_only=False) for m in nets])
    flops = np.array([net_flops(m) for m in nets])
    Xt, yt = data.X_train.float(), data.y_train
    dense_times = time_model(dense, Xt, yt, cfg.batch_size, cfg.time_reps)
    times = np.array([time_model(m, Xt, yt, cfg.batch_size, cfg.time_reps) for m in nets])
    ranks_used = [[t.ranks for t in m if isinstance(t, TTLinear)] for m in nets]
    return summarize(cfg, dense_acc, acc, params, flops, d_params, d_flops, svd_rel_err,
                     dense_times, times, ranks_used, data.n_train)


def summarize(cfg, dense_acc, acc, params, flops, d_params, d_flops, svd_rel_err, dense_times, times,
              ranks_used=None, n_train=None) -> StudyResult:
    """acc: (3, ranks, seeds) test accuracy of TT from scratch, TT-SVD, TT-SVD + fine-tune; dense_acc: (seeds,)."""
    ranks = np.array(cfg.ranks)
    da = float(np.mean(dense_acc))
    scratch, svd, ft = (acc[k].mean(1) for k in range(3))
    p_comp = d_params / params
    f_comp = d_flops / flops

    # 1. large compression at a small accuracy loss, trained in TT form (Novikov et al.)
    ok = (p_comp >= cfg.min_compression) & (scratch >= da - cfg.max_loss - 1e-12)
    best = int(np.argmax(np.where(ok, p_comp, -np.inf))) if ok.any() else None
    if best is None:  # report the most accurate rank among those compressed enough, else the largest rank
        big = np.flatnonzero(p_comp >= cfg.min_compression)
        show = int(big[np.argmax(scratch[big])]) if len(big) else len(ranks) - 1
    else:
        show = best
    ok_ft = (p_comp >= cfg.min_compression) & (ft >= da - cfg.max_loss - 1e-12)
    best_ft = int(np.argmax(np.where(ok_ft, p_comp, -np.inf))) if ok_ft.any() else None   # reported, not checked
    # 2. fine-tuning recovers what plain TT-SVD loses, at the lowest rank where TT-SVD loses > max_loss
    lossy = np.flatnonzero(svd < da - cfg.max_loss)
    low = int(lossy[0]) if len(lossy) else None
    if low is not None:
        lost, won = da - svd[low], ft[low] - svd[low]
        rec_ok = won >= cfg.recover * lost
        rec_measured = (f"r={ranks[low]}: TT-SVD {100 * svd[low]:.1f}% (dense {100 * da:.1f}%), fine-tuned "
                        f"{100 * ft[low]:.1f}%: {100 * won / lost:.0f}% of the loss recovered")
    else:
        rec_ok, rec_measured = False, "TT-SVD lost <= the margin at every rank: nothing to recover"
    checks = [
        Check("large compression at a small accuracy loss (TT trained from scratch)",
              f"some rank reaches >= {cfg.min_compression:g}x fewer parameters with test accuracy within "
              f"{100 * cfg.max_loss:g} points of the dense net",
              f"r={ranks[show]}: {fmt(p_comp[show])}x params, {fmt(f_comp[show])}x FLOPs, "
              f"{100 * scratch[show]:.1f}% vs dense {100 * da:.1f}%", best is not None, NOVIKOV),
        Check("fine-tuning recovers the accuracy plain TT-SVD loses at low rank",
              f"at the lowest rank where TT-SVD loses > {100 * cfg.max_loss:g} points, fine-tuning wins back "
              f">= {100 * cfg.recover:g}% of the loss", rec_measured, bool(rec_ok), FINETUNE),
    ]
    d_step, d_inf, d_one = dense_times
    metrics = {
        "dataset": cfg.dataset, "n_train": n_train, "width": cfg.width, "depth": cfg.depth, "modes": cfg.modes,
        "ranks": ranks.tolist(), "tt_ranks": ranks_used,
        "dense_accuracy": da, "dense_params": int(d_params), "dense_flops": int(d_flops),
        "scratch_accuracy": scratch.tolist(), "ttsvd_accuracy": svd.tolist(), "finetuned_accuracy": ft.tolist(),
        "params": params.tolist(), "flops": flops.tolist(),
        "param_compression": p_comp.tolist(), "flop_compression": f_comp.tolist(),
        "ttsvd_relative_weight_error": svd_rel_err.mean(1).tolist(),
        "dense_train_step_ms": 1e3 * d_step, "dense_inference_ms": 1e3 * d_inf,
        "tt_train_step_ms": (1e3 * times[:, 0]).tolist(), "tt_inference_ms": (1e3 * times[:, 1]).tolist(),
        "dense_latency_ms": 1e3 * d_one, "tt_latency_ms": (1e3 * times[:, 2]).tolist(),
        "train_speed_ratio": (d_step / times[:, 0]).tolist(), "inference_speed_ratio": (d_inf / times[:, 1]).tolist(),
        "latency_ratio": (d_one / times[:, 2]).tolist(),
        "best_rank": None if best is None else int(ranks[best]),
        "best_finetuned_rank": None if best_ft is None else int(ranks[best_ft]),
    }
    arrays = {"ranks": ranks, "dense_accuracy": np.asarray(dense_acc), "accuracy": acc, "params": params,
              "flops": flops, "svd_relative_error": svd_rel_err, "times": np.asarray(times)}
    speed = ", ".join(f"r={r}: {d_step / t[0]:.2f}x train, {d_inf / t[1]:.2f}x infer, {d_one / t[2]:.2f}x batch-1"
                      for r, t in zip(ranks, times))
    notes = (f"Dense {100 * da:.1f}% with {d_params} parameters. "
             + ("; ".join(f"r={r}: {fmt(pc)}x params ({fmt(fc)}x FLOPs) scratch {100 * a:.1f}%, TT-SVD "
                          f"{100 * b:.1f}%, fine-tuned {100 * c:.1f}%"
                          for r, pc, fc, a, b, c in zip(ranks, p_comp, f_comp, scratch, svd, ft)))
             + f". Measured speed vs dense (ratio > 1 = TT faster): {speed}. "
             + ("No rank of TT-SVD + fine-tuning" if best_ft is None else
                f"TT-SVD + fine-tuning at r={ranks[best_ft]}") + f" is >= {cfg.min_compression:g}x smaller within "
             f"{100 * cfg.max_loss:g} points of dense.")
    return StudyResult(metrics, checks, arrays, {"tensorized": _figure(cfg, da, acc, p_comp, f_comp, ranks,
                                                                       dense_times, times)}, notes=notes)


def _figure(cfg, da, acc, p_comp, f_comp, ranks, dense_times, times):
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    labels = ("TT from scratch", "TT-SVD of dense", "TT-SVD + fine-tune")
    for ax, comp, what in ((axes[0], p_comp, "parameters"), (axes[1], f_comp, "forward multiply-adds")):
        for k, (lab, mk) in enumerate(zip(labels, "osd")):
            m = acc[k].mean(1)
            ax.plot(comp, 100 * m, marker=mk, label=lab)
            if acc.shape[2] > 1:
                ax.errorbar(comp, 100 * m, yerr=100 * acc[k].std(1), fmt="none", alpha=0.4)
        for c, r, a in zip(comp, ranks, acc[0].mean(1)):
            ax.annotate(f"r={r}", (c, 100 * a), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(100 * da, color="k", ls="--", lw=1, label="dense")
        ax.axhline(100 * (da - cfg.max_loss), color="gray", ls=":", lw=1)
        if comp.min() < 1.0:
            ax.axvline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(f"compression ({what}, dense / TT)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{cfg.dataset}: accuracy vs compression ({what})")
    axes[0].legend(fontsize=8)
    ax = axes[2]
    for k, (lab, mk) in enumerate(zip(("training step", "inference (whole set)", "inference (1 example)"), "osd")):
        ax.plot(ranks, dense_times[k] / times[:, k], marker=mk, label=lab)
    ax.plot(ranks, f_comp, ls="--", color="gray", label="FLOP ratio")
    ax.axhline(1.0, color="k", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("TT rank")
    ax.set_ylabel("dense time / TT time")
    ax.set_title("measured speed vs dense (1 thread)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="tensorized",
    description="TT-matrix MLPs: accuracy vs parameter/FLOP compression, from scratch vs TT-SVD (+ fine-tuning), "
                "measured speed vs dense",
    paper="Novikov et al. 2015, Tensorizing neural networks; Hawkins & Zhang 2019 (arXiv 1905.10478)",
    config=TensorizedConfig, presets=PRESETS, run=run))
