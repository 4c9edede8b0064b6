"""Spawn vs slide: fitting one Gaussian bump with a sum of K learnable Gaussians.

The toy from the discussion of Martinelli et al. ("Puzzling success of overparameterization: lottery tickets
or escape dimensions?", EPFL): a single Gaussian that can only *slide* towards a target bump gets no gradient
when it starts far away (the overlap with the target, hence the pull, decays like exp(-d^2 / 2v)), so it
fails; a model with many bumps spread over the interval can in effect *spawn* one near the target, which
then slides the short way and grows, while the others shrink away.

Here: target g(x) = A exp(-(x - mu)^2 / (2 sigma^2)) on [lo, hi]; model = sum of K Gaussians with learnable
centres, widths and amplitudes (:class:`overparam.models.gaussians.GaussianSum`), centres uniform on the
interval; loss = mean squared error on a grid; Adam. All seeds of one K train at once as one (S, K) batch
(exactly equivalent to training them one by one: tested). Success = relative loss L / mean(g^2) below a
tolerance. Plus one K = 1 run started far from the bump, one large-K run, and the gradient with respect to a
single centre as a function of its distance to the target (autograd vs the closed form).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.models.gaussians import GaussianSum, centre_gradient, gaussian, grid_loss, line_centre_gradient
from overparam.studies.base import Check, FLOAT64, MAX_STEPS, RunContext, Study, StudyResult, fmt, register
from overparam.train import Diverged

MARTINELLI = ("Martinelli et al., 'Puzzling success of overparameterization: lottery tickets or escape "
              "dimensions?' (EPFL), spawn-vs-slide toy")


@dataclass
class SpawnVsSlideConfig(StudyConfig):
    Ks: list[int] = param([1, 2, 4, 8, 16, 32, 64], "numbers K of Gaussians in the model", min=1, max=4096)
    seeds: int = param(128, "random initializations per K (trained as one batch)", min=1, max=100000)
    lo: float = param(0.0, "left end of the interval", min=-1e6, max=1e6)
    hi: float = param(1.0, "right end of the interval", min=-1e6, max=1e6)
    grid: int = param(100, "points of the loss grid on the interval", min=10, max=100000)
    target_centre: float = param(0.7, "centre mu of the target bump", min=-1e6, max=1e6)
    target_width: float = param(0.02, "width sigma of the target bump", min=1e-6, max=1e6)
    target_amplitude: float = param(1.0, "height A of the target bump", min=1e-6, max=1e6)
    init_width: float = param(0.02, "initial width of every model bump", min=1e-6, max=1e6)
    init_amplitude: float = param(0.1, "initial amplitude of every model bump", min=-1e6, max=1e6)
    lr: float = param(0.02, "Adam learning rate", min=1e-8, max=10.0)
    steps: int = param(400, "Adam steps", min=1, max=MAX_STEPS)
    dtype: str = param("float32", "float32 or float64", choices=("float32", "float64"))
    success_tol: float = param(0.01, "success: final loss / mean(target^2) below this", min=0.0, max=1.0)
    far_centre: float = param(0.2, "initial centre of the K=1 'from far away' run", min=-1e6, max=1e6)
    far_sds: float = param(5.0, "'far' = farther than this many sqrt(sigma^2 + w0^2) from the target", min=0.5, max=1e6)
    picture_K: int = param(0, "K of the succeeding large-K picture (0: the largest K)", min=0, max=4096)
    min_rise: float = param(0.3, "success fraction at the largest K minus at the smallest K must reach this",
                            min=0.0, max=1.0)
    dip_tol: float = param(0.1, "allowed drop of the success fraction below its running maximum over K",
                           min=0.0, max=1.0)
    grad_tol: float = param(1e-6, "'~0': |dL/dc| at the far centre below this fraction of its maximum over c",
                            min=0.0, max=1.0)

    def validate(self) -> None:
        if not self.hi > self.lo:
            raise ConfigError("hi: must be greater than lo")
        if sorted(set(self.Ks)) != list(self.Ks) or len(self.Ks) < 2:
            raise ConfigError("Ks: need at least 2 strictly increasing values, e.g. 1,2,4,8")
        if not (self.lo <= self.far_centre <= self.hi and self.lo < self.target_centre < self.hi):
            raise ConfigError("far_centre, target_centre: must lie in [lo, hi]")

    def peak_bytes(self) -> dict[str, float]:
        """Every seed's K bumps on the loss grid, with their gradients (float64 at most)."""
        return {"seeds or grid": FLOAT64 * 4 * self.seeds * max(self.Ks) * self.grid}


PRESETS = {
    # 128 seeds per K, K = 1..64, 400 Adam steps on a 100-point grid (float32).
    "quick": {},
    # Hundreds of seeds more, longer training, a finer grid, double precision.
    "paper": {"seeds": 1000, "steps": 3000, "grid": 400, "lr": 0.01, "dtype": "float64"},
}


def target_on(cfg, x: torch.Tensor) -> torch.Tensor:
    return gaussian(x, cfg.target_centre, cfg.target_width, cfg.target_amplitude)


def fit(model: GaussianSum, x: torch.Tensor, target: torch.Tensor, steps: int, lr: float,
        record_every: int = 0) -> tuple[np.ndarray, list]:
    """Adam on the sum of the S per-model grid losses (= S independent trainings). Returns final losses (S,)
    and, if ``record_every``, snapshots [(step, centres, widths, amplitudes)]."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    snaps = []
    for step in range(steps):
        if record_every and step % record_every == 0:
            snaps.append((step, *(t.detach().clone() for t in (model.centre, model.width, model.amplitude))))
        losses = grid_loss(model, x, target)
        if not torch.isfinite(losses).all():
            raise Diverged(f"Gaussian-sum fit diverged at step {step} (lr={lr}); lower the learning rate")
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    if record_every:
        snaps.append((steps, *(t.detach().clone() for t in (model.centre, model.width, model.amplitude))))
    with torch.no_grad():
        return grid_loss(model, x, target).cpu().numpy(), snaps


def gradient_profile(cfg, centres: np.ndarray):
    """dL/dc of one bump (init width and amplitude) at each centre, in float64 on the loss grid: autograd,
    the grid closed form, and the real-line closed form divided by the interval length."""
    dt = torch.float64
    S = len(centres)
    xd = torch.linspace(cfg.lo, cfg.hi, cfg.grid, dtype=dt)
    td = target_on(cfg, xd)
    model = GaussianSum(torch.tensor(centres, dtype=dt).reshape(S, 1), torch.full((S, 1), cfg.init_width, dtype=dt),
                        torch.full((S, 1), cfg.init_amplitude, dtype=dt))
    grid_loss(model, xd, td).sum().backward()
    auto = model.centre.grad[:, 0].numpy()
    closed = centre_gradient(model, xd, td)[:, 0].numpy()
    line = np.array([line_centre_gradient(c, cfg.init_width, cfg.init_amplitude, cfg.target_centre,
                                          cfg.target_width, cfg.target_amplitude) for c in centres]) / (cfg.hi - cfg.lo)
    return auto, closed, line


def run(cfg: SpawnVsSlideConfig, ctx: RunContext) -> StudyResult:
    torch.set_num_threads(1)
    dt = getattr(torch, cfg.dtype)
    x = torch.linspace(cfg.lo, cfg.hi, cfg.grid, dtype=dt)
    target = target_on(cfg, x)
    scale = float((target ** 2).mean())
    rel = np.zeros((len(cfg.Ks), cfg.seeds))
    init_dist = np.zeros((len(cfg.Ks), cfg.seeds))   # distance of the nearest initial centre to the target
    with ctx.progress.bar(len(cfg.Ks), f"K = {cfg.Ks[0]}..{cfg.Ks[-1]} x{cfg.seeds} seeds") as bar:
        for i, K in enumerate(cfg.Ks):
            model = GaussianSum.random(cfg.seeds, K, (cfg.lo, cfg.hi), cfg.init_width, cfg.init_amplitude,
                                       seed=cfg.seed * 1_000_003 + K, dtype=dt)
            init_dist[i] = (model.centre.detach() - cfg.target_centre).abs().min(1).values.numpy()
            losses, _ = fit(model, x, target, cfg.steps, cfg.lr)
            rel[i] = losses / scale
            bar.update(1)
    # the two picture runs, in float64 (cheap; and float32 round-off in the grid would give Adam, which
    # rescales any gradient to a step of size ~lr, a spurious ~1e-9 push to amplify)
    d64 = torch.float64
    x = torch.linspace(cfg.lo, cfg.hi, cfg.grid, dtype=d64)
    target = target_on(cfg, x)
    far = GaussianSum(torch.tensor([[cfg.far_centre]], dtype=d64), torch.tensor([[cfg.init_width]], dtype=d64),
                      torch.tensor([[cfg.init_amplitude]], dtype=d64))
    far_loss, far_snaps = fit(far, x, target, cfg.steps, cfg.lr, record_every=max(cfg.steps // 50, 1))
    Kp = cfg.picture_K or cfg.Ks[-1]
    big = GaussianSum.random(1, Kp, (cfg.lo, cfg.hi), cfg.init_width, cfg.init_amplitude,
                             seed=cfg.seed * 7_777 + Kp, dtype=d64)
    big_loss, big_snaps = fit(big, x, target, cfg.steps, cfg.lr, record_every=max(cfg.steps // 50, 1))
    # gradient wrt one centre vs its position
    cs = np.linspace(cfg.lo, cfg.hi, 401)
    auto, closed, line = gradient_profile(cfg, np.r_[cs, cfg.far_centre])
    result = summarize(cfg, rel, init_dist, float(far_loss[0]) / scale, float(big_loss[0]) / scale,
                       far_snaps, cs, auto[:-1], closed[:-1], line[:-1], float(auto[-1]), float(line[-1]))
    result.figures = {"success_vs_K": _success_figure(cfg, rel),
                      "slide_and_spawn": _runs_figure(cfg, x, target, far_snaps, big_snaps, far_loss[0] / scale,
                                                      big_loss[0] / scale, Kp),
                      "centre_gradient": _gradient_figure(cfg, cs, auto[:-1], closed[:-1], line[:-1])}
    return result


def summarize(cfg, rel, init_dist, far_rel, big_rel, far_snaps, cs, auto, closed, line, far_grad, far_line):
    """rel: (Ks, seeds) final relative losses; init_dist: (Ks, seeds) nearest initial centre to the target."""
    Ks = np.array(cfg.Ks)
    ok = rel < cfg.success_tol
    frac = ok.mean(1)
    se = np.sqrt(frac * (1 - frac) / rel.shape[1])
    dip = float(np.max(np.maximum.accumulate(frac) - frac))
    rise = float(frac[-1] - frac[0])
    v = np.sqrt(cfg.target_width ** 2 + cfg.init_width ** 2)
    far_d = cfg.far_sds * v
    k1 = 0
    far_mask = init_dist[k1] > far_d
    far_success = float(ok[k1][far_mask].mean()) if far_mask.any() else float("nan")
    far_start_d = abs(cfg.far_centre - cfg.target_centre)
    moved = float(abs(far_snaps[-1][1][0, 0] - far_snaps[0][1][0, 0]))
    gmax = float(np.max(np.abs(auto)))
    grad_ratio = abs(far_grad) / gmax if gmax > 0 else float("nan")
    closed_err = float(np.max(np.abs(auto - closed)) / max(gmax, 1e-300))
    far_fails = far_rel >= cfg.success_tol and (not far_mask.any() or far_success <= 0.05)
    checks = [
        Check("success fraction rises with K (spawn beats slide)",
              f"success at K={Ks[-1]} exceeds success at K={Ks[0]} by >= {fmt(cfg.min_rise)}, never dropping more "
              f"than {fmt(cfg.dip_tol)} below its running maximum over K",
              f"{fmt(frac[0])} at K={Ks[0]} -> {fmt(frac[-1])} at K={Ks[-1]} (largest dip {fmt(dip)})",
              rise >= cfg.min_rise and dip <= cfg.dip_tol, MARTINELLI),
        Check("K = 1 started far from the bump fails",
              f"the K=1 run from c={fmt(cfg.far_centre)} (distance {fmt(far_start_d)} = "
              f"{fmt(far_start_d / v)} sqrt(sigma^2+w0^2)) ends with relative loss >= {fmt(cfg.success_tol)}, and "
              f"<= 5% of random K=1 seeds starting > {fmt(cfg.far_sds)} sqrt(sigma^2+w0^2) away succeed",
              f"relative loss {fmt(far_rel)}, centre moved {fmt(moved)}; far random K=1 seeds: "
              + (f"{fmt(far_success)} succeed ({int(far_mask.sum())} seeds)" if far_mask.any() else "none"),
              far_fails, MARTINELLI),
        Check("no gradient far away",
              f"|dL/dc| at the far centre < {fmt(cfg.grad_tol)} x its maximum over centre positions",
              f"{fmt(abs(far_grad))} vs max {fmt(gmax)} (ratio {fmt(grad_ratio)}); closed form on the line "
              f"{fmt(abs(far_line))}; autograd vs closed form max error {fmt(closed_err)} of max",
              grad_ratio < cfg.grad_tol, MARTINELLI + "; closed form in overparam.models.gaussians"),
    ]
    metrics = {"Ks": Ks.tolist(), "success_fraction": frac.tolist(), "success_se": se.tolist(),
               "median_relative_loss": np.median(rel, 1).tolist(), "seeds": int(rel.shape[1]),
               "far_run_relative_loss": far_rel, "far_run_centre_moved": moved,
               "large_K_run_relative_loss": big_rel, "far_gradient": far_grad, "max_gradient": gmax,
               "far_gradient_ratio": grad_ratio, "far_gradient_line_closed_form": far_line,
               "gradient_closed_form_error": closed_err,
               "K1_far_seeds": int(far_mask.sum()), "K1_far_success": far_success,
               "K1_near_success": float(ok[k1][~far_mask].mean()) if (~far_mask).any() else None,
               "reach": float(v)}
    arrays = {"Ks": Ks, "relative_loss": rel, "nearest_initial_distance": init_dist, "grad_centres": cs,
              "grad_autograd": auto, "grad_closed_form": closed, "grad_line": line}
    notes = (f"Success fraction (relative loss < {fmt(cfg.success_tol)}, {rel.shape[1]} seeds): "
             + ", ".join(f"K={k}: {fmt(f)}" for k, f in zip(Ks, frac))
             + f". The K=1 run from c={fmt(cfg.far_centre)} ends at relative loss {fmt(far_rel)} (centre moved "
             f"{fmt(moved)}); its initial |dL/dc| is {fmt(abs(far_grad))}, {fmt(grad_ratio)} of the maximum. "
             f"K=1 seeds that start within {fmt(cfg.far_sds)} sqrt(sigma^2+w0^2) succeed at rate "
             + (fmt(metrics['K1_near_success']) if metrics['K1_near_success'] is not None else "n/a") + ".")
    return StudyResult(metrics, checks, arrays, {}, notes=notes)


# ----------------------------------------------------------------------------------------------- figures

def _success_figure(cfg, rel):
    import matplotlib.pyplot as plt

    frac = (rel < cfg.success_tol).mean(1)
    se = np.sqrt(frac * (1 - frac) / rel.shape[1])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(cfg.Ks, frac, yerr=se, fmt="o-", capsize=3, color="C0")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("K (Gaussians in the model)")
    ax.set_ylabel(f"fraction of seeds with loss < {fmt(cfg.success_tol)}·mean(g²)")
    ax.set_title(f"Spawn vs slide: {rel.shape[1]} seeds per K, centres uniform on [{fmt(cfg.lo)}, {fmt(cfg.hi)}]",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _runs_figure(cfg, x, target, far_snaps, big_snaps, far_rel, big_rel, Kp):
    import matplotlib.pyplot as plt

    xs = torch.linspace(cfg.lo, cfg.hi, 600, dtype=torch.float64)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6))

    def curve(snap):
        _, c, w, a = snap
        m = GaussianSum(c.double(), w.double(), a.double())
        with torch.no_grad():
            return m(xs)[0].numpy(), m.components(xs)[0].numpy()

    g = target_on(cfg, xs).numpy()
    for row, (snaps, title, r) in enumerate(((far_snaps, "K = 1 from far away (slide)", far_rel),
                                             (big_snaps, f"K = {Kp} (spawn)", big_rel))):
        ax = axes[row, 0]
        ax.plot(xs, g, "k-", lw=2, label="target")
        f0, _ = curve(snaps[0])
        f1, comps = curve(snaps[-1])
        ax.plot(xs, f0, "C1--", label="initial model")
        ax.plot(xs, f1, "C0-", label=f"final (rel. loss {fmt(float(r))})")
        if comps.shape[0] > 1:
            for comp in comps:
                ax.plot(xs, comp, color="C0", alpha=0.25, lw=0.7)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax = axes[row, 1]
        steps = [s[0] for s in snaps]
        cents = np.stack([s[1][0].numpy() for s in snaps])
        amps = np.stack([s[3][0].numpy() for s in snaps])
        for k in range(cents.shape[1]):
            ax.plot(steps, cents[:, k], color=plt.cm.coolwarm(min(abs(amps[-1, k]) / cfg.target_amplitude, 1.0)),
                    lw=0.9)
        ax.axhline(cfg.target_centre, color="k", ls=":", lw=1)
        ax.set_ylim(cfg.lo, cfg.hi)
        ax.set_xlabel("step")
        ax.set_ylabel("centres (colour: final |amplitude|)")
        ax.set_title("centre trajectories", fontsize=9)
    fig.tight_layout()
    return fig


def _gradient_figure(cfg, cs, auto, closed, line):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    tiny = 1e-300
    ax.semilogy(cs, np.abs(auto) + tiny, "C0-", label="autograd (grid loss)")
    ax.semilogy(cs, np.abs(closed) + tiny, "C1--", label="closed form (grid)")
    ax.semilogy(cs, np.abs(line) + tiny, "k:", label="closed form (real line) / length")
    ax.axvline(cfg.target_centre, color="gray", lw=0.8)
    ax.axvline(cfg.far_centre, color="C3", lw=0.8, label="far start")
    top = max(np.abs(auto).max(), 1e-30)
    ax.set_ylim(top * 1e-20, top * 10)
    ax.set_xlabel("centre c of a single bump")
    ax.set_ylabel("|dL/dc|")
    ax.set_title("One bump: the pull towards the target vanishes with distance", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="spawn-vs-slide",
    description="Fit one Gaussian bump with K learnable Gaussians: success vs K; a lone far bump gets no gradient.",
    paper="Martinelli et al. (EPFL), lottery tickets or escape dimensions: spawn-vs-slide toy",
    config=SpawnVsSlideConfig, presets=PRESETS, run=run))
