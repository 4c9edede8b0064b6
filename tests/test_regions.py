"""Region counting on hand-made grids (exact answers), the grid geometry, and grid classification."""

import numpy as np
import pytest
import torch

from overparam.measure.regions import classify_grid, count_regions, grid_points


def checkerboard(n_squares: int, square: int) -> np.ndarray:
    i = np.arange(n_squares * square) // square
    return ((i[:, None] + i[None, :]) % 2).astype(np.int64)


def test_checkerboard_4_vs_8_connectivity():
    g = checkerboard(4, 3)   # 4x4 squares of 3x3 pixels, 8 squares per colour
    r4 = count_regions(g, 2, connectivity=4)
    assert r4.counts.tolist() == [8, 8] and r4.total == 16 and r4.excess == 14
    assert all((s == 9).all() for s in r4.sizes)
    r8 = count_regions(g, 2, connectivity=8)  # squares of one colour touch at corners
    assert r8.counts.tolist() == [1, 1] and r8.excess == 0
    assert r8.sizes[0].tolist() == [72] and r8.sizes[1].tolist() == [72]


def test_two_blobs_on_background():
    g = np.zeros((20, 20), dtype=int)
    g[2:6, 2:6] = 1
    g[12:18, 10:15] = 1
    r = count_regions(g, 2)
    assert r.counts.tolist() == [1, 2]
    assert r.sizes[1].tolist() == [30, 16]
    assert r.sizes[0].tolist() == [400 - 46]


def test_ring_splits_background_into_inside_and_outside():
    yy, xx = np.mgrid[:41, :41]
    rad = np.hypot(yy - 20, xx - 20)
    g = ((rad >= 8) & (rad <= 11)).astype(int)     # a thick ring: closed under both connectivities
    for conn in (4, 8):
        assert count_regions(g, 2, connectivity=conn).counts.tolist() == [2, 1]


def test_diagonal_touch():
    g = np.array([[1, 0, 0],
                  [0, 1, 0],
                  [0, 0, 1]])
    assert count_regions(g, 2, connectivity=4).counts.tolist() == [2, 3]   # diagonal pixels apart
    assert count_regions(g, 2, connectivity=8).counts.tolist() == [1, 1]   # joined through corners
    # a one-pixel diagonal line: under 4-connectivity it is 6 pieces yet still cuts the background in two;
    # under 8-connectivity it is one piece and the background leaks through its corners (one piece too)
    g2 = np.eye(6, dtype=int)
    assert count_regions(g2, 2, 4).counts.tolist() == [2, 6]
    assert count_regions(g2, 2, 8).counts.tolist() == [1, 1]


def test_min_pixels_ignores_small_regions_and_counts_them():
    g = np.zeros((10, 10), dtype=int)
    g[1, 1] = 1             # 1 pixel
    g[5:7, 5:7] = 1         # 4 pixels
    g[8, 2:5] = 1           # 3 pixels
    r = count_regions(g, 2, min_pixels=4)
    assert r.counts.tolist() == [1, 1] and r.ignored.tolist() == [0, 2] and r.min_pixels == 4
    assert count_regions(g, 2, min_pixels=1).counts.tolist() == [1, 3]


def test_absent_class_and_n_classes_default():
    g = np.zeros((5, 5), dtype=int)
    r = count_regions(g, 3)
    assert r.counts.tolist() == [1, 0, 0] and r.excess == 0
    assert count_regions(np.full((4, 4), 2)).counts.tolist() == [0, 0, 1]


def test_bad_inputs():
    with pytest.raises(ValueError):
        count_regions(np.zeros((3, 3), dtype=int), 2, connectivity=6)
    with pytest.raises(ValueError):
        count_regions(np.zeros(5, dtype=int), 2)
    with pytest.raises(ValueError):
        count_regions(np.zeros((3, 3), dtype=int), 2, min_pixels=0)


def test_grid_points_are_pixel_centres_row_major():
    pts = grid_points((0.0, 4.0, 0.0, 2.0), (2, 4))
    assert pts.shape == (8, 2)
    assert pts[:4, 0].tolist() == [0.5, 1.5, 2.5, 3.5] and pts[:4, 1].tolist() == [0.5] * 4
    assert pts[4:, 1].tolist() == [1.5] * 4


def test_classify_grid_of_a_known_rule_and_of_an_ensemble():
    def half_plane(x):       # class 1 where x > y: one boundary, two regions
        s = x[:, 0] - x[:, 1]
        return torch.stack([-s, s], 1)

    lab = classify_grid(half_plane, (-1, 1, -1, 1), 32)
    assert lab.shape == (32, 32) and count_regions(lab, 2).counts.tolist() == [1, 1]
    assert lab[0, -1] == 1 and lab[-1, 0] == 0   # row 0 is the bottom (y low), column -1 is x high

    def stripes(x):          # sign of sin(3 pi x): three vertical stripes on [0, 1]
        s = torch.sin(3 * np.pi * x[:, 0])
        return torch.stack([s, -s], 1)

    def batch(x):            # an "ensemble" of two replicas: (R, N, C)
        return torch.stack([half_plane(x), stripes(x)])

    labs = classify_grid(batch, (0, 1, 0, 1), 30, batch_size=100)
    assert labs.shape == (2, 30, 30)
    assert count_regions(labs[1], 2).counts.tolist() == [2, 1]   # thirds in x: class 0, 1, 0
