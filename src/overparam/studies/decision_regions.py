"""Decision regions during training: are they first fragmented ("gerrymandered"), then merged?

The discussion of Martinelli et al. ("Puzzling success of overparameterization: lottery tickets or escape
dimensions?", EPFL) describes decision regions that early in training break into many small pieces per
class and later merge as training goes on. Here: 2-D data (two spirals, moons; with and without label
noise), MLPs in-w-w-out of several widths w trained with full-batch Adam (the seeds of one width as one
vmap ensemble); at log-spaced steps a fine grid is classified and the connected regions of each class are
counted (:func:`overparam.measure.regions.count_regions`, 4-connectivity by default, regions below
``min_pixels`` ignored). The checks encode the hypothesis as stated -- the count rises above its initial
value, then falls back (max over time > initial, final < max) -- and pass or fail by the data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import corrupt, load_dataset
from overparam.measure.regions import classify_grid, count_regions
from overparam.models import MLP, mlp_parameter_count, seeded
from overparam.studies.base import (Check, FLOAT32, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH, RunContext, Study, StudyResult,
                                    fmt, mlp_training_bytes, register)
from overparam.train import Diverged, Ensemble, TrainConfig
from overparam.train.ensemble import fit_ensemble
from overparam.train.hooks import after_each_step

MARTINELLI = ("Martinelli et al., 'Puzzling success of overparameterization: lottery tickets or escape "
              "dimensions?' (EPFL), decision-region discussion")


@dataclass
class DecisionRegionsConfig(StudyConfig):
    datasets: list[str] = param(["spirals", "moons"], "2-D datasets", choices=("spirals", "moons"))
    label_noises: list[float] = param([0.0, 0.2], "label-noise fractions (each dataset is run at each)",
                                      min=0.0, max=0.9)
    n_train: int = param(300, "training points", min=10, max=MAX_EXAMPLES)
    spiral_turns: float = param(1.5, "turns of each spiral arm (spirals)", min=0.25, max=10.0)
    data_noise: float = param(0.05, "std of the Gaussian input noise of the generator (spirals 0.05, moons "
                                     "uses 2x this)", min=0.0, max=1.0)
    widths: list[int] = param([8, 32, 128], "hidden widths w of the in-w-w-out MLPs", min=1, max=MAX_WIDTH)
    depth: int = param(2, "hidden layers", min=1, max=6)
    seeds: int = param(2, "initializations per width (one vmap ensemble)", min=1, max=64)
    lr: float = param(0.01, "Adam learning rate (full batch)", min=1e-6, max=1.0)
    steps: int = param(800, "full-batch Adam steps", min=1, max=MAX_STEPS)
    snapshots: int = param(20, "region counts at this many log-spaced steps (plus step 0)", min=3, max=500)
    resolution: int = param(80, "grid pixels per side", min=8, max=1024)
    margin: float = param(0.25, "the grid extends this fraction of the data range beyond the data",
                          min=0.0, max=5.0)
    connectivity: int = param(4, "4: pixels join through edges only; 8: corners join too", choices=(4, 8))
    min_pixels: int = param(4, "regions smaller than this many pixels are ignored (1 keeps all)", min=1,
                            max=1024 * 1024)
    fall_margin: float = param(1.0, "drop (regions, seed mean) from the peak to the end that counts as a fall",
                               min=0.0, max=1e6)
    rise_margin: float = param(1.0, "rise (regions, seed mean) above step 0 that counts as a rise", min=0.0, max=1e6)
    strip_steps: int = param(6, "pictures in the strip (steps chosen evenly among the snapshots)", min=2, max=20)
    gif: bool = param(True, "also render an animated GIF of one run (regions_animation.gif in the run folder)")

    def validate(self) -> None:
        if not self.datasets or not self.label_noises or not self.widths:
            raise ConfigError("datasets, label_noises, widths: each needs at least one value")
        if sorted(set(self.widths)) != list(self.widths):
            raise ConfigError("widths: must be strictly increasing, e.g. 8,32,128")

    def peak_bytes(self) -> dict[str, float]:
        """The grid classified by every seed at once, the kept label grids, and the ensembles in training."""
        pixels = self.resolution ** 2
        grid = FLOAT32 * 2 * self.seeds * pixels * (max(self.widths) * self.depth + 2)
        kept = len(self.widths) * (self.snapshots + 1) * self.seeds * pixels
        return {"resolution": grid + kept,
                "widths": mlp_training_bytes(self.seeds, 2, [max(self.widths)] * self.depth, 2, self.n_train)}


PRESETS = {
    # 2 datasets x 2 noise levels x 3 widths x 2 seeds, 800 Adam steps, an 80x80 grid at 21 steps.
    "quick": {},
    # Longer training, wider range of widths, more seeds and a finer grid; more snapshots.
    "paper": {"widths": [4, 8, 16, 32, 64, 128, 256, 512], "seeds": 5, "steps": 20000, "snapshots": 60,
              "resolution": 256, "n_train": 1000, "min_pixels": 16},
}


def snapshot_steps(steps: int, k: int) -> np.ndarray:
    """Step 0 and about k log-spaced steps from 1 to ``steps`` (unique, increasing, ends at ``steps``)."""
    return np.unique(np.r_[0, np.geomspace(1, steps, k).round().astype(int), steps])


def _data(cfg, name: str, noise: float, seed: int):
    opts = {"turns": cfg.spiral_turns, "noise": cfg.data_noise} if name == "spirals" else {"noise": 2 * cfg.data_noise}
    ds = load_dataset(name, seed=seed, n_train=cfg.n_train, n_test=cfg.n_train, **opts)
    if noise > 0:
        ds = corrupt(ds, "label_noise", p=noise, seed=seed)
    X = ds.X_train
    lo, hi = X.min(0).values, X.max(0).values
    pad = cfg.margin * (hi - lo)
    extent = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))
    return ds, extent


def train_and_count(cfg, X, y, n_classes: int, width: int, extent, seeds: list[int], steps_at: np.ndarray,
                    keep_grids: bool, progress, desc: str):
    """Train one ensemble (one width) with full-batch Adam; at ``steps_at`` classify the grid and count.

    Returns counts (snapshots, seeds, classes), train error (snapshots, seeds), and the label grids
    (snapshots, seeds, H, W) if ``keep_grids``.
    """
    hidden = [width] * cfg.depth
    ens = Ensemble([seeded(lambda: MLP(2, hidden, n_classes), s) for s in seeds])
    total = int(steps_at[-1])
    tcfg = TrainConfig(optimizer="adam", lr=cfg.lr, steps=total, batch_size=len(X), eval_every=10**12)
    R = len(seeds)
    counts = np.zeros((len(steps_at), R, n_classes), dtype=np.int64)
    err = np.zeros((len(steps_at), R))
    grids = [] if keep_grids else None
    snapshot_index = {int(s): j for j, s in enumerate(steps_at)}

    def snapshot(step: int) -> None:
        j = snapshot_index.get(step)
        if j is None:
            return
        lab = classify_grid(ens.forward, extent, cfg.resolution)
        for r in range(R):
            counts[j, r] = count_regions(lab[r], n_classes, cfg.connectivity, cfg.min_pixels).counts
        with torch.no_grad():
            err[j] = (ens.forward(X).argmax(-1) != y).double().mean(1).numpy()
        if keep_grids:
            grids.append(lab.astype(np.uint8))

    snapshot(0)
    with after_each_step(ens.params, snapshot):   # the ensemble engine, with a hook after every step
        hist = fit_ensemble(ens, X, y, tcfg, n_classes=n_classes, progress=progress, desc=desc)
    if hist.diverged.any():
        raise Diverged(f"width {width} diverged at step {int(hist.diverged_at.max())} (lr={cfg.lr}); "
                       "lower the learning rate")
    return counts, err, (np.stack(grids) if keep_grids else None)


def run(cfg: DecisionRegionsConfig, ctx: RunContext) -> StudyResult:
    torch.set_num_threads(1)
    steps_at = snapshot_steps(cfg.steps, cfg.snapshots)
    conds = [(d, p) for d in cfg.datasets for p in cfg.label_noises]
    W = len(cfg.widths)
    counts = np.zeros((len(conds), W, len(steps_at), cfg.seeds, 2), dtype=np.int64)
    errors = np.zeros((len(conds), W, len(steps_at), cfg.seeds))
    # pictures: the condition with the most label noise on the first dataset, all widths, seed 0
    pic_cond = max(range(len(conds)), key=lambda i: (conds[i][0] == cfg.datasets[0], conds[i][1]))
    pics, pic_data, extents = {}, None, []
    for ci, (name, noise) in enumerate(conds):
        ds, extent = _data(cfg, name, noise, cfg.seed)
        extents.append(extent)
        if ds.n_classes != 2:
            raise ConfigError(f"datasets: {name} has {ds.n_classes} classes; this study uses 2")
        X, y = ds.X_train, ds.y_train
        if ci == pic_cond:
            pic_data = (X.numpy(), y.numpy())
        for wi, width in enumerate(cfg.widths):
            seeds = [(cfg.seed * 1_000_003 + width) * 101 + r for r in range(cfg.seeds)]
            c, e, g = train_and_count(cfg, X, y, 2, width, extent, seeds, steps_at, ci == pic_cond, ctx.progress,
                                      f"{name} noise={noise:g} w={width} ({ci * W + wi + 1}/{len(conds) * W})")
            counts[ci, wi], errors[ci, wi] = c, e
            if g is not None:
                pics[width] = g[:, 0]
    result = summarize(cfg, conds, steps_at, counts, errors)
    figs = {"region_counts": _curves_figure(cfg, conds, steps_at, counts),
            "regions_vs_width": _width_figure(cfg, conds, counts)}
    name, noise = conds[pic_cond]
    strip_idx = np.unique(np.linspace(0, len(steps_at) - 1, cfg.strip_steps).round().astype(int))
    figs["region_strip"] = _strip_figure(cfg, pics, steps_at, strip_idx, extents[pic_cond], pic_data,
                                         f"{name}, {int(round(100 * noise))}% label noise")
    result.figures = figs
    result.arrays.update({"picture_grids": np.stack([pics[w] for w in cfg.widths]),  # (widths, snaps, H, W)
                          "picture_extent": np.array(extents[pic_cond])})
    if cfg.gif:
        gif = regions_gif(pics[cfg.widths[-1]], steps_at, extents[pic_cond], pic_data,
                          f"{name}, {int(round(100 * noise))}% noise, width {cfg.widths[-1]}")
        if gif is not None:  # already rendered: the store writes it as regions_animation.gif
            result.figures["regions_animation"] = {"gif": gif}
            result.metrics["gif_bytes"] = len(gif)
    return result


def rise_fall(curve: np.ndarray, rise_margin: float, fall_margin: float) -> tuple[bool, bool, int]:
    """(rises, falls, peak index) of a count curve over snapshots: max >= c[0] + rise_margin (and > c[0]);
    last <= max - fall_margin (and < max)."""
    peak = int(np.argmax(curve))
    top = curve[peak]
    rises = bool(top > curve[0] and top >= curve[0] + rise_margin)
    falls = bool(curve[-1] < top and curve[-1] <= top - fall_margin)
    return rises, falls, peak


def summarize(cfg, conds, steps_at, counts, errors) -> StudyResult:
    """counts: (conditions, widths, snapshots, seeds, classes); errors: (conditions, widths, snapshots, seeds)."""
    total = counts.sum(-1).astype(float)          # (C, W, T, S)
    mean = total.mean(-1)                          # (C, W, T)
    runs, rises, falls, both = [], 0, 0, 0
    for ci, (name, noise) in enumerate(conds):
        for wi, width in enumerate(cfg.widths):
            r, f, peak = rise_fall(mean[ci, wi], cfg.rise_margin, cfg.fall_margin)
            rises, falls, both = rises + r, falls + f, both + (r and f)
            runs.append({"dataset": name, "label_noise": noise, "width": width,
                         "initial": float(mean[ci, wi, 0]), "peak": float(mean[ci, wi].max()),
                         "peak_step": int(steps_at[peak]), "final": float(mean[ci, wi, -1]),
                         "final_train_error": float(errors[ci, wi, -1].mean()), "rises": r, "falls": f})
    n = len(runs)
    checks = [
        Check("region counts rise above their initial value (fragmentation)",
              f"in at least half of the {n} runs (dataset x noise x width, seed mean) the count peaks >= "
              f"{fmt(cfg.rise_margin)} region(s) above its value at step 0",
              f"{rises}/{n} runs", 2 * rises >= n, MARTINELLI),
        Check("region counts fall after their peak (same-class regions merge)",
              f"in at least half of the runs the final count is >= {fmt(cfg.fall_margin)} region(s) below the peak",
              f"{falls}/{n} runs", 2 * falls >= n, MARTINELLI),
        Check("rise then fall in the same run",
              "in at least half of the runs both of the above hold",
              f"{both}/{n} runs", 2 * both >= n, MARTINELLI),
    ]
    # what the data show, per noise level
    by_noise = {}
    for p in cfg.label_noises:
        rs = [r for r in runs if r["label_noise"] == p]
        by_noise[str(p)] = {"initial": float(np.mean([r["initial"] for r in rs])),
                            "peak": float(np.mean([r["peak"] for r in rs])),
                            "final": float(np.mean([r["final"] for r in rs])),
                            "rise_then_fall": int(sum(r["rises"] and r["falls"] for r in rs)), "runs": len(rs)}
    metrics = {"snapshot_steps": steps_at.tolist(), "connectivity": cfg.connectivity, "min_pixels": cfg.min_pixels,
               "resolution": cfg.resolution, "runs": runs, "by_noise": by_noise,
               "rise_runs": rises, "fall_runs": falls, "rise_then_fall_runs": both, "n_runs": n,
               "params": {str(w): mlp_parameter_count(2, [w] * cfg.depth, 2) for w in cfg.widths}}
    parts = [f"noise {float(p):g}: regions {v['initial']:.1f} at step 0, peak {v['peak']:.1f}, final {v['final']:.1f} "
             f"(rise-then-fall in {v['rise_then_fall']}/{v['runs']} runs)" for p, v in by_noise.items()]
    notes = ("Total connected regions (both classes, seed mean, " + f"{cfg.connectivity}-connectivity, regions < "
             f"{cfg.min_pixels} px ignored): " + "; ".join(parts) + ". "
             + ("The data show the hypothesised rise-then-fall in most runs." if 2 * both >= n else
                f"The data do NOT show rise-then-fall in most runs (rise in {rises}/{n}, fall after the peak in "
                f"{falls}/{n}, both in {both}/{n})" + (": counts rise and do not fall back." if 2 * rises >= n
                                                        else ".")))
    arrays = {"snapshot_steps": steps_at, "region_counts": counts, "train_error": errors,
              "widths": np.array(cfg.widths), "label_noises": np.array([p for _, p in conds]),
              "datasets": np.array([d for d, _ in conds])}
    return StudyResult(metrics, checks, arrays, {}, notes=notes)


# ----------------------------------------------------------------------------------------------- figures

def _curves_figure(cfg, conds, steps_at, counts):
    import matplotlib.pyplot as plt

    C = len(conds)
    fig, axes = plt.subplots(1, C, figsize=(3.6 * C, 3.4), squeeze=False, sharey=True)
    x = np.maximum(steps_at, 0.5)  # step 0 drawn at 0.5 on the log axis
    total = counts.sum(-1)
    for ci, (name, noise) in enumerate(conds):
        ax = axes[0, ci]
        for wi, width in enumerate(cfg.widths):
            m = total[ci, wi].mean(-1)
            ax.plot(x, m, "-", marker=".", color=plt.cm.viridis(wi / max(len(cfg.widths) - 1, 1)), label=f"w={width}")
            if total.shape[-1] > 1:
                ax.fill_between(x, total[ci, wi].min(-1), total[ci, wi].max(-1), alpha=0.12,
                                color=plt.cm.viridis(wi / max(len(cfg.widths) - 1, 1)), lw=0)
        ax.set_xscale("log")
        ax.set_title(f"{name}, {int(round(100 * noise))}% label noise", fontsize=9)
        ax.set_xlabel("step (step 0 at 0.5)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("connected regions (both classes)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"Decision regions during training ({cfg.connectivity}-connectivity, regions < {cfg.min_pixels} px "
                 "ignored)", fontsize=10)
    fig.tight_layout()
    return fig


def _width_figure(cfg, conds, counts):
    import matplotlib.pyplot as plt

    total = counts.sum(-1).mean(-1)   # (C, W, T)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for ci, (name, noise) in enumerate(conds):
        tag = f"{name} {int(round(100 * noise))}%"
        ax.plot(cfg.widths, total[ci, :, -1], "o-", color=f"C{ci}", label=f"{tag}: final")
        ax.plot(cfg.widths, total[ci].max(-1), "^:", color=f"C{ci}", alpha=0.7, label=f"{tag}: peak")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("hidden width w")
    ax.set_ylabel("connected regions (seed mean)")
    ax.set_title("Region count vs width: at the end of training and at the peak", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _draw_regions(ax, grid, extent, data):
    from matplotlib.colors import ListedColormap

    ax.imshow(grid, origin="lower", extent=extent, cmap=ListedColormap(["#9ecae1", "#fdae6b"]), vmin=0, vmax=1,
              interpolation="nearest", aspect="auto")
    if data is not None:
        X, y = data
        ax.scatter(X[:, 0], X[:, 1], c=np.where(y == 0, "#08519c", "#a63603"), s=3, lw=0)
    ax.set_xticks([])
    ax.set_yticks([])


def _strip_figure(cfg, pics, steps_at, strip_idx, extent, data, title):
    import matplotlib.pyplot as plt

    rows, cols = len(cfg.widths), len(strip_idx)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.7 * rows), squeeze=False)
    for i, width in enumerate(cfg.widths):
        for j, t in enumerate(strip_idx):
            ax = axes[i, j]
            grid = pics[width][t]
            _draw_regions(ax, grid, extent, data)
            n = count_regions(grid, 2, cfg.connectivity, cfg.min_pixels).total
            ax.set_title(f"step {steps_at[t]}: {n} reg.", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"w={width}", fontsize=8)
    fig.suptitle(f"Decision regions, {title} (seed 0)", fontsize=9)
    fig.tight_layout()
    return fig


def regions_gif(grids: np.ndarray, steps_at: np.ndarray, extent, data, title: str, fps: int = 4) -> bytes | None:
    """An animated GIF (bytes) of the region pictures over training; None if Pillow is missing.

    Frames are drawn with matplotlib and assembled by Pillow in memory (matplotlib's PillowWriter needs a
    file name; the store saves no files for studies, so the bytes travel in the result's arrays).
    """
    try:
        from PIL import Image
    except ImportError:
        return None
    import matplotlib.pyplot as plt

    frames = []
    fig, ax = plt.subplots(figsize=(3.2, 3.2), dpi=80)
    for t, grid in enumerate(grids):
        ax.clear()
        _draw_regions(ax, grid, extent, data)
        ax.set_title(f"{title}\nstep {steps_at[t]}", fontsize=7)
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        frames.append(Image.fromarray(rgba[..., :3].copy()).convert("P", palette=Image.ADAPTIVE, colors=32))
    plt.close(fig)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


STUDY = register(Study(
    name="decision-regions",
    description="Connected decision regions per class during training of 2-D MLPs: fragment first, merge later?",
    paper="Martinelli et al. (EPFL), lottery tickets or escape dimensions: decision-region discussion",
    config=DecisionRegionsConfig, presets=PRESETS, run=run))
