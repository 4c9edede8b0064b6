"""Escape width: how often a teacher-student ReLU network gets stuck, from the teacher's width to 10x, and what
the stuck points are (saddles or minima).

Safran & Shamir 2018 ("Spurious local minima are common in two-layer ReLU neural networks", ICML; arXiv
1712.08968): fitting a teacher x -> sum_i relu(w_i . x) with orthonormal w_i on standard Gaussian inputs by a
student of the *same* width has spurious local minima, gradient methods end in them with a probability that
grows with the width, and "mild over-parameterization appears to drastically reduce such local minima".
Martinelli et al. (EPFL, "Puzzling success of overparameterization: lottery tickets or escape dimensions?") read
this as *escape dimensions*: extra units add directions out of what would be a minimum of the narrow network.

Setup: a teacher of k ReLU units (rows of a random orthogonal matrix in d dimensions, output weights 1, no
biases) labels n standard Gaussian inputs; students ``MLP(d, [m k], 1)`` (ReLU, biases, PyTorch's default
initialization) for multipliers m = 1 .. 10 train on the mean squared error by full-batch Adam with a cosine
schedule, float64, many seeds per width as one batched ensemble (``train_ensemble``). A run *succeeds* when its
final training loss is below ``success_loss`` x Var(y) (near zero). A failed run is *stalled* when its loss fell by
less than ``plateau_drop`` over the second half of training (a plateau, not a slow descent).

At every stalled run (up to ``max_probe`` per width): the loss gradient norm, the exact Hessian index
(``overparam.measure.hessian_index``, dense: the fraction of eigenvalues below -sqrt(eps) max|lambda|), the
smallest eigenvalue and its eigenvector (``hessian_eigs(which="smallest")``), and an *escape test*: the weights
are pushed by +-``escape_scale`` ||theta|| along that eigenvector and trained on for ``escape_steps``; the run
*escapes* if the loss then falls by at least ``escape_drop`` (relative). A strict saddle is escaped this way;
a local minimum is not. Note that the ReLU loss on finite data is only piecewise smooth: a run can stall at a
kink where the Hessian of the smooth piece has small negative eigenvalues but no descent direction exists --
the escape test, not the sign of lambda_min, decides (and a degenerate saddle, such as the symmetric split of a
narrower optimum, has index 0 yet is escaped: the tests check both cases).

*Widen test* (the escape-dimensions claim made concrete): each probed stuck student of width h is widened to 2h
by h fresh units whose output weights are 0 -- the same function and the same loss -- and trained on for
``escape_steps``; the study reports how many then reach near-zero loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.measure import hessian_eigs, hessian_index
from overparam.measure.sharpness import FlatLoss
from overparam.models import MLP, mlp_parameter_count, seeded
from overparam.studies.base import (Check, FLOAT64, MAX_EXAMPLES, MAX_STEPS, RunContext, Study, StudyResult, fmt,
                                    mlp_training_bytes, register)
from overparam.train import Diverged, TrainConfig, train_ensemble
from overparam.train.ensemble import Ensemble, fit_ensemble
from overparam.train.parallel import torch_threads

SAFRAN = ("Safran & Shamir 2018 (ICML, arXiv 1712.08968), Sec. 4: spurious local minima of 2-layer ReLU "
          "teacher-student nets at the teacher's width; 'mild over-parameterization appears to drastically "
          "reduce such local minima'")
MARTINELLI = ("Martinelli et al. (EPFL), 'Puzzling success of overparameterization: lottery tickets or escape "
              "dimensions?': extra width adds escape directions from bad minima")


@dataclass
class EscapeWidthConfig(StudyConfig):
    teacher_width: int = param(3, "k: ReLU units of the teacher (orthonormal weights, output weights 1)", min=1,
                               max=10_000)
    d: int = param(6, "input dimension (>= teacher_width)", min=1, max=10_000)
    n_train: int = param(300, "training inputs (standard Gaussian)", min=4, max=MAX_EXAMPLES)
    multipliers: list[int] = param([1, 2, 4, 10], "student widths as multiples of the teacher's (first must be 1)",
                                   min=1, max=1000)
    seeds: int = param(32, "students (initializations) per width", min=2, max=100_000)
    lr: float = param(0.02, "Adam learning rate (cosine schedule to 0)", min=1e-6, max=1.0)
    steps: int = param(2500, "full-batch Adam steps", min=20, max=MAX_STEPS)
    success_loss: float = param(1e-3, "a run succeeds if final loss / Var(y) is below this", min=0.0, max=1e6)
    plateau_drop: float = param(0.05, "a failed run is stalled if its loss fell by less than this fraction over "
                                      "the second half of training", min=0.0, max=1.0)
    max_probe: int = param(16, "stalled runs probed (Hessian, escape test) per width", min=0, max=100_000)
    escape_scale: float = param(0.05, "escape test: push of escape_scale x ||theta|| along the lowest-curvature "
                                      "eigenvector (both signs)", min=0.0, max=10.0)
    escape_steps: int = param(600, "escape test: Adam steps after the push", min=1, max=MAX_STEPS)
    escape_drop: float = param(0.2, "escape test: a run escapes if its loss falls by this fraction", min=0.0,
                               max=1.0)
    margin: float = param(0.3, "check: success at the widest must beat success at the teacher's width by this",
                          min=0.0, max=1.0)

    def validate(self) -> None:
        m = list(self.multipliers)
        if len(m) < 2 or m[0] != 1 or sorted(m) != m or len(set(m)) != len(m):
            raise ConfigError("multipliers: need >= 2 strictly increasing integers starting at 1, e.g. 1,2,4,10")
        if self.d < self.teacher_width:
            raise ConfigError(f"d: must be >= teacher_width ({self.teacher_width}) for orthonormal teacher weights")

    def peak_bytes(self) -> dict[str, float]:
        """The widest students in training (float64, full batch) and the dense Hessians of the probed ones."""
        h = self.teacher_width * max(self.multipliers)
        P = mlp_parameter_count(self.d, [h], 1)
        return {"multipliers": mlp_training_bytes(self.seeds, self.d, [h], 1, self.n_train, FLOAT64)
                + FLOAT64 * 3 * P ** 2,
                "n_train": FLOAT64 * 2 * self.n_train * (self.d + 1)}


PRESETS = {
    "quick": {},   # k=3, d=6, n=300, widths 3/6/12/30, 32 seeds, 2500 Adam steps
    # Safran & Shamir's regime: k = 6 orthonormal units (spurious minima from k = 6 on in their population loss),
    # many samples to approach the population loss, 200 seeds per width
    "paper": {"teacher_width": 6, "d": 6, "n_train": 10000, "multipliers": [1, 2, 3, 4, 6, 8, 10], "seeds": 200,
              "steps": 20000, "max_probe": 100, "escape_steps": 4000},
}


# -------------------------------------------------------------------------------------------------- data
def teacher_data(k: int, d: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n Gaussian inputs, the targets sum_i relu(w_i . x) of a teacher with orthonormal w_1..w_k, and the
    teacher's weights W (k x d); float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    W = Q[:k]                                        # k orthonormal rows
    y = torch.relu(X @ W.T).sum(1, keepdim=True)
    return X, y, W


def stalled_runs(loss_curves: np.ndarray, success: np.ndarray, plateau_drop: float) -> np.ndarray:
    """(records, replicas) loss curves -> bool per replica: failed and fell by < plateau_drop over the last half."""
    T = loss_curves.shape[0]
    mid, end = loss_curves[(T - 1) // 2], loss_curves[-1]
    return ~success & np.isfinite(end) & (end >= (1.0 - plateau_drop) * mid)


def success_summary(multipliers, success: np.ndarray, margin: float) -> dict:
    """success: (widths, seeds) bool -> fractions and the two checks' verdicts."""
    frac = success.mean(1)
    return {"fraction": frac, "at_teacher": float(frac[0]), "at_widest": float(frac[-1]),
            "gain": float(frac[-1] - frac[0]), "helps": bool(frac[-1] >= frac[0] + margin),
            "failures_exist": bool(frac[0] < 1.0)}


# -------------------------------------------------------------------------------------------------- probes
def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _load_flat(model, flat: torch.Tensor):
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()
    return model


def probe(models: list, X: torch.Tensor, y: torch.Tensor, cfg: EscapeWidthConfig, seed: int) -> dict:
    """Hessian index, lowest eigenvalue and escape test at each (stalled) model; float64, dense Hessians."""
    data = (X, y)
    out = {k: [] for k in ("loss", "grad_norm", "index", "n_negative", "fraction_zero", "lambda_min",
                           "lambda_max", "escape_loss", "escaped")}
    pushed, base = [], []
    for model in models:
        f = FlatLoss(model, "mse", data, num_threads=1)
        loss, g = f.loss_and_grad(f.w0)
        hi = hessian_index(model, "mse", data, method="dense", dtype=torch.float64)
        low = hessian_eigs(model, "mse", data, k=1, which="smallest", method="dense", dtype=torch.float64)
        ev = hi.eigenvalues
        out["loss"].append(loss)
        out["grad_norm"].append(float(g.norm()))
        out["index"].append(hi.fraction)
        out["n_negative"].append(int(hi.n_negative))
        out["fraction_zero"].append(hi.fraction_zero)
        out["lambda_min"].append(float(ev[0]))
        out["lambda_max"].append(float(ev[-1]))
        theta = _flat(model)
        u = torch.as_tensor(low.vectors[:, 0], dtype=theta.dtype)
        step = cfg.escape_scale * float(theta.norm())
        for sign in (1.0, -1.0):
            m = MLP(model.in_dim, model.widths, 1).double()
            pushed.append(_load_flat(m, theta + sign * step * u))
        base.append(loss)
    if not models:
        return {k: np.zeros(0) for k in out}
    after = _train_on(pushed, X, y, cfg, seed).reshape(-1, 2).min(1)
    out["escape_loss"] = list(after)
    out["escaped"] = list(after <= (1.0 - cfg.escape_drop) * np.asarray(base))
    return {k: np.asarray(v) for k, v in out.items()}


def widen(model: MLP, extra: int, seed: int) -> MLP:
    """The same function with ``extra`` more hidden units: fresh (default-initialized) input weights, output
    weights 0. The loss is unchanged; the new units' output weights get a gradient unless the residual is
    orthogonal to their features -- the escape directions that width adds."""
    h = model.widths[0]
    wide = seeded(lambda: MLP(model.in_dim, [h + extra], 1), seed).double()
    with torch.no_grad():
        a, b = model.net[0], model.net[2]
        A, B = wide.net[0], wide.net[2]
        A.weight[:h] = a.weight
        A.bias[:h] = a.bias
        B.weight.zero_()
        B.weight[:, :h] = b.weight
        B.bias.copy_(b.bias)
    return wide


def widen_test(models: list, X: torch.Tensor, y: torch.Tensor, cfg: EscapeWidthConfig, extra: int,
               seed: int) -> np.ndarray:
    """Loss after ``escape_steps`` of training each model widened by ``extra`` zero-output units."""
    if not models:
        return np.zeros(0)
    return _train_on([widen(m, extra, seed + i) for i, m in enumerate(models)], X, y, cfg, seed)


def _train_on(models: list, X: torch.Tensor, y: torch.Tensor, cfg: EscapeWidthConfig, seed: int) -> np.ndarray:
    """Final training loss of each model after ``escape_steps`` of full-batch Adam (cosine), one batched ensemble
    per architecture; inf where a run diverged."""
    tc = TrainConfig(optimizer="adam", lr=cfg.lr, steps=cfg.escape_steps, schedule="cosine", loss="mse",
                     batch_size=len(X), eval_every=cfg.escape_steps, dtype="float64", seed=seed)
    out = np.empty(len(models))
    for width in sorted({tuple(m.widths) for m in models}):
        idx = [i for i, m in enumerate(models) if tuple(m.widths) == width]
        ens = Ensemble([models[i] for i in idx], torch.float64)
        out[idx] = np.nan_to_num(fit_ensemble(ens, X, y, tc).final()["train_loss"], nan=np.inf)
    return out


# -------------------------------------------------------------------------------------------------- run
def run(cfg: EscapeWidthConfig, ctx: RunContext) -> StudyResult:
    k = cfg.teacher_width
    X, y, _ = teacher_data(k, cfg.d, cfg.n_train, cfg.seed)
    var = float(y.var())
    widths = [k * m for m in cfg.multipliers]
    W, S = len(widths), cfg.seeds
    final = np.zeros((W, S))
    curves, steps_at = [], None
    stalled = np.zeros((W, S), dtype=bool)
    probes = []
    tc = TrainConfig(optimizer="adam", lr=cfg.lr, steps=cfg.steps, schedule="cosine", loss="mse",
                     batch_size=cfg.n_train, eval_every=max(cfg.steps // 20, 1), dtype="float64", seed=cfg.seed)
    with torch_threads(1):
        for i, h in enumerate(widths):
            seeds = [cfg.seed * 100_003 + 1009 * h + r for r in range(S)]
            ens, hist = train_ensemble(lambda h=h: MLP(cfg.d, [h], 1), seeds, X, y, tc, progress=ctx.progress,
                                       desc=f"width {h} ({cfg.multipliers[i]}x) x{S}")
            L = hist.curves("train_loss") / var
            if hist.diverged is not None and hist.diverged.all():
                raise Diverged(f"width {h}: every run diverged at lr={cfg.lr}; lower the learning rate")
            final[i] = np.nan_to_num(L[-1], nan=np.inf)
            curves.append(L)
            steps_at = np.array(hist.step)
            ok = final[i] < cfg.success_loss
            stalled[i] = stalled_runs(L, ok, cfg.plateau_drop)
            picks = np.flatnonzero(stalled[i])[:cfg.max_probe]
            stuck = [ens.replica(int(r)).double() for r in picks]
            pr = probe(stuck, X, y, cfg, seed=cfg.seed + i)
            pr["replica"] = picks
            pr["widened_loss"] = widen_test(stuck, X, y, cfg, h, seed=cfg.seed + 7 * i) / var
            pr["loss"] = pr["loss"] / var
            pr["escape_loss"] = pr["escape_loss"] / var
            probes.append(pr)
    return summarize(cfg, widths, final, stalled, probes, curves, steps_at)


def summarize(cfg: EscapeWidthConfig, widths, final: np.ndarray, stalled: np.ndarray, probes: list[dict],
              curves=None, steps_at=None) -> StudyResult:
    success = final < cfg.success_loss
    s = success_summary(cfg.multipliers, success, cfg.margin)
    frac = s["fraction"]
    n_probe = np.array([len(p["index"]) for p in probes])
    esc = np.array([float(np.mean(p["escaped"])) if len(p["escaped"]) else float("nan") for p in probes])
    psd = np.array([float(np.mean(p["n_negative"] == 0)) if len(p["index"]) else float("nan") for p in probes])
    med_index = np.array([float(np.median(p["index"])) if len(p["index"]) else float("nan") for p in probes])
    rel_lmin = [p["lambda_min"] / np.maximum(p["lambda_max"], 1e-300) for p in probes]
    p0 = probes[0]
    n0 = len(p0["index"])
    stuck_minima = int(np.sum(~p0["escaped"])) if n0 else 0
    wide_ok = np.array([float(np.mean(p["widened_loss"] < cfg.success_loss)) if len(p["index"]) else float("nan")
                        for p in probes])
    params = [mlp_parameter_count(cfg.d, [h], 1) for h in widths]
    checks = [
        Check("width rescues the failing seeds",
              f"success fraction at {cfg.multipliers[-1]}x the teacher's width >= success at 1x + {cfg.margin:g}",
              f"{fmt(s['at_widest'])} at {widths[-1]} units vs {fmt(s['at_teacher'])} at {widths[0]} "
              f"(gain {s['gain']:+.2f})", s["helps"], SAFRAN + "; " + MARTINELLI),
        Check("students of the teacher's width get stuck",
              "success fraction at the teacher's width < 1 (spurious stationary points exist)",
              f"{fmt(s['at_teacher'])} ({int((~success[0]).sum())} of {success.shape[1]} seeds fail, "
              f"{int(stalled[0].sum())} on a plateau)", s["failures_exist"], SAFRAN),
        Check("the stuck points at the teacher's width are minima, not saddles",
              "among probed stalled runs at 1x, a push along the lowest-curvature direction lets at most half "
              "escape (local minima; a strict saddle would be escaped)",
              (f"{n0 - stuck_minima} of {n0} escaped; Hessian index median {fmt(med_index[0])}, "
               f"{int(round(psd[0] * n0))} of {n0} with no negative eigenvalue") if n0 else "no stalled run to probe",
              bool(n0 > 0 and esc[0] <= 0.5), SAFRAN + " (GD converges to spurious local minima)"),
        Check("extra width turns the stuck minima into escapable points",
              f"the probed stuck 1x students, widened to {2 * widths[0]} units by fresh units with output weight 0 "
              f"(same function, same loss), reach loss < {cfg.success_loss:g} Var(y) in >= half the cases",
              (f"{int(round(wide_ok[0] * n0))} of {n0} reach it (median loss "
               f"{fmt(float(np.median(p0['widened_loss'])))} "
               f"from {fmt(float(np.median(p0['loss'])))})") if n0 else "no stalled run to widen",
              bool(n0 > 0 and wide_ok[0] >= 0.5), MARTINELLI),
    ]
    metrics = {
        "teacher_width": cfg.teacher_width, "widths": list(widths), "multipliers": list(cfg.multipliers),
        "params": params, "seeds": cfg.seeds, "success_fraction": frac.tolist(),
        "stalled_fraction": stalled.mean(1).tolist(),
        "median_final_loss": np.median(final, 1).tolist(),
        "probed": n_probe.tolist(), "escaped_fraction": esc.tolist(), "psd_fraction": psd.tolist(),
        "widened_success_fraction": wide_ok.tolist(),
        "median_index": med_index.tolist(),
        "median_rel_lambda_min": [float(np.median(r)) if len(r) else float("nan") for r in rel_lmin],
        "median_grad_norm": [float(np.median(p["grad_norm"])) if len(p["grad_norm"]) else float("nan")
                             for p in probes],
        "stalled_losses_at_teacher_width": sorted(float(v) for v in p0["loss"]),
    }
    arrays = {"widths": np.array(widths), "final_loss": final, "success": success, "stalled": stalled}
    for i, (h, p) in enumerate(zip(widths, probes)):
        for key in ("replica", "loss", "grad_norm", "index", "lambda_min", "lambda_max", "escape_loss", "escaped",
                    "widened_loss"):
            if key in p:
                arrays[f"probe_w{h}_{key}"] = np.asarray(p[key])
    if curves is not None:
        arrays["steps"] = np.asarray(steps_at)
        for h, L in zip(widths, curves):
            arrays[f"loss_curves_w{h}"] = L
    notes = (f"Teacher of {cfg.teacher_width} ReLU units: {fmt(s['at_teacher'])} of the students of the same width "
             f"reach near-zero loss, {fmt(s['at_widest'])} at {cfg.multipliers[-1]}x. "
             + (f"Of {n0} stalled runs probed at 1x, {n0 - stuck_minima} escaped after a push along the "
                f"lowest-curvature direction (median Hessian index {fmt(med_index[0])}; smallest eigenvalue / "
                f"largest median {fmt(metrics['median_rel_lambda_min'][0])}): the stuck points behave as "
                + ("local minima" if esc[0] <= 0.5 else "saddles")
                + f"; widened by {widths[0]} zero-output units, {int(round(wide_ok[0] * n0))} of the {n0} go on to "
                  f"near-zero loss."
                if n0 else "No stalled run at 1x."))
    figures = {"escape_width": _figure(cfg, widths, frac, stalled, probes, curves, steps_at)}
    return StudyResult(metrics, checks, arrays, figures, notes=notes)


def _figure(cfg, widths, frac, stalled, probes, curves, steps_at):
    import matplotlib.pyplot as plt

    ncols = 3 if curves is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.3 * ncols, 3.8))
    ax = axes[0]
    ax.plot(cfg.multipliers, frac, "o-", color="C0", label="near-zero loss")
    ax.plot(cfg.multipliers, stalled.mean(1), "s--", color="C3", label="stalled (plateau)")
    ax.set_xscale("log")
    ax.set_xticks(cfg.multipliers)
    ax.set_xticklabels([f"{m}x\n({w})" for m, w in zip(cfg.multipliers, widths)], fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("student width / teacher width (units)")
    ax.set_ylabel("fraction of seeds")
    ax.set_title(f"teacher of {cfg.teacher_width} ReLU units, {stalled.shape[1]} seeds/width", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    for i, (h, p) in enumerate(zip(widths, probes)):
        if not len(p["index"]):
            continue
        rel = p["lambda_min"] / np.maximum(p["lambda_max"], 1e-300)
        esc = np.asarray(p["escaped"], dtype=bool)
        ax.scatter(np.asarray(p["loss"])[~esc], rel[~esc], marker="o", color=f"C{i}", label=f"{h} units: stuck")
        ax.scatter(np.asarray(p["loss"])[esc], rel[esc], marker="x", color=f"C{i}", label=f"{h} units: escaped")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_yscale("symlog", linthresh=1e-8)
    ax.set_xscale("log")
    ax.set_xlabel("loss / Var(y) at the stall")
    ax.set_ylabel("lambda_min / lambda_max")
    ax.set_title("stalled runs: curvature and escape test", fontsize=9)
    if any(len(p["index"]) for p in probes):
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if curves is not None:
        ax = axes[2]
        for i, (h, L) in enumerate(zip(widths, curves)):
            ax.plot(steps_at, L, color=f"C{i}", alpha=0.15, lw=0.8)
            ax.plot(steps_at, np.median(L, 1), color=f"C{i}", lw=2, label=f"{h} units (median)")
        ax.axhline(cfg.success_loss, color="k", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("Adam step")
        ax.set_ylabel("training loss / Var(y)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="escape-width",
    description="Teacher-student ReLU nets: share of seeds reaching zero loss from the teacher's width to 10x, and "
                "whether stuck runs sit at minima or saddles.",
    paper="Safran & Shamir 2018 (ICML); Martinelli et al. (EPFL), escape dimensions",
    config=EscapeWidthConfig, presets=PRESETS, run=run))
