"""Decision regions of a 2-D classifier: classify a fine grid, count connected regions per class.

A *region* of class c is a connected component of the grid pixels predicted as c
(``scipy.ndimage.label``). Connectivity is a stated choice:

* ``connectivity=4`` (default): pixels are joined through shared edges only; two pixels that touch at
  a corner are *not* joined. A checkerboard has one region per square.
* ``connectivity=8``: corners join too; the squares of one colour of a checkerboard form one region.

Regions smaller than ``min_pixels`` pixels can be ignored (they are counted in ``ignored`` instead),
so that isolated pixels on a jagged boundary do not dominate a count. ``min_pixels=1`` keeps all.
The grid covers a closed rectangle; components are not joined across its border (no wrap-around).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

CONNECTIVITY = (4, 8)


@dataclass
class RegionCount:
    """Connected regions of a label grid, per class (after dropping regions below ``min_pixels``)."""

    counts: np.ndarray          # (n_classes,) int: kept regions of each class
    ignored: np.ndarray         # (n_classes,) int: regions of each class smaller than min_pixels
    sizes: list[np.ndarray]     # per class, pixel sizes of the kept regions, largest first
    connectivity: int
    min_pixels: int

    @property
    def total(self) -> int:
        """Kept regions over all classes."""
        return int(self.counts.sum())

    @property
    def excess(self) -> int:
        """Regions beyond one per present class: 0 for a clean partition into one piece per class."""
        return int(self.counts.sum() - (self.counts > 0).sum())


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in CONNECTIVITY:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def count_regions(labels: np.ndarray, n_classes: int | None = None, connectivity: int = 4,
                  min_pixels: int = 1) -> RegionCount:
    """Count the connected regions of each class in a 2-D integer label grid ``labels`` (H, W)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D grid, got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
    C = int(n_classes if n_classes is not None else (labels.max() + 1 if labels.size else 0))
    structure = _structure(connectivity)
    counts, ignored, sizes = np.zeros(C, dtype=np.int64), np.zeros(C, dtype=np.int64), []
    for c in range(C):
        comp, n = ndimage.label(labels == c, structure=structure)
        size = np.bincount(comp.ravel(), minlength=n + 1)[1:] if n else np.zeros(0, dtype=np.int64)
        keep = size >= min_pixels
        counts[c], ignored[c] = int(keep.sum()), int((~keep).sum())
        sizes.append(np.sort(size[keep])[::-1].copy())
    return RegionCount(counts, ignored, sizes, connectivity, int(min_pixels))


def grid_points(extent: tuple[float, float, float, float], resolution: int | tuple[int, int],
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel centres of a (H, W) grid over extent = (xmin, xmax, ymin, ymax), as (H*W, 2), row-major.

    Row i has y = ys[i] (increasing upwards when shown with origin='lower'), column j has x = xs[j].
    """
    H, W = (resolution, resolution) if isinstance(resolution, int) else resolution
    xmin, xmax, ymin, ymax = extent
    if not (xmax > xmin and ymax > ymin) or H < 1 or W < 1:
        raise ValueError(f"bad grid: extent={extent}, resolution={(H, W)}")
    xs = torch.linspace(xmin, xmax, W + 1, dtype=torch.float64)
    ys = torch.linspace(ymin, ymax, H + 1, dtype=torch.float64)
    xs, ys = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.ravel(), gy.ravel()], 1).to(dtype)


@torch.no_grad()
def classify_grid(predict: Callable[[torch.Tensor], torch.Tensor], extent: tuple[float, float, float, float],
                  resolution: int | tuple[int, int], dtype: torch.dtype = torch.float32,
                  batch_size: int = 65536) -> np.ndarray:
    """argmax class of ``predict`` on every pixel: (H, W), or (R, H, W) if predict returns (R, N, C)."""
    H, W = (resolution, resolution) if isinstance(resolution, int) else resolution
    pts = grid_points(extent, (H, W), dtype)
    outs = [predict(pts[i:i + batch_size]).argmax(-1) for i in range(0, len(pts), batch_size)]
    lab = torch.cat(outs, -1).cpu().numpy()
    return lab.reshape(*lab.shape[:-1], H, W)
