"""decision-regions: the checks on synthetic count curves (rise-then-fall passes, flat or rising fails),
the snapshot schedule, the GIF, and one tiny real run."""

import numpy as np
import pytest

from overparam.config import ConfigError, resolve_config
from overparam.studies import base
from overparam.studies import decision_regions as dr
from overparam.studies.base import RunContext


def _verdicts(result):
    return {c.name: c.passed for c in result.checks}


def _cfg(**over):
    return resolve_config(dr.DecisionRegionsConfig, dr.PRESETS, "quick", over)


def test_registered_with_both_presets():
    assert set(base.REGISTRY["decision-regions"].presets) >= {"quick", "paper"}
    for preset in ("quick", "paper"):
        resolve_config(dr.DecisionRegionsConfig, dr.PRESETS, preset, {})


def test_config_validation():
    with pytest.raises(ConfigError):
        _cfg(widths=[32, 8])
    with pytest.raises(ConfigError):
        _cfg(connectivity=6)


def test_snapshot_steps():
    s = dr.snapshot_steps(800, 20)
    assert s[0] == 0 and s[-1] == 800 and (np.diff(s) > 0).all() and 1 in s
    assert len(dr.snapshot_steps(5, 20)) == 6   # 0..5, deduplicated


def test_rise_fall_on_curves():
    assert dr.rise_fall(np.array([2, 5, 9, 6, 3]), 1, 1) == (True, True, 2)
    assert dr.rise_fall(np.array([2, 2, 2, 2]), 1, 1)[:2] == (False, False)
    assert dr.rise_fall(np.array([2, 3, 5, 8]), 1, 1)[:2] == (True, False)
    assert dr.rise_fall(np.array([6, 4, 3, 2]), 1, 1)[:2] == (False, True)
    assert dr.rise_fall(np.array([2.0, 2.5, 2.0]), 1, 1)[:2] == (False, False)   # margins


def _synthetic(cfg, shape):
    """counts (conds, widths, T, seeds, 2) whose total follows `shape(t)` split over 2 classes."""
    steps_at = dr.snapshot_steps(cfg.steps, cfg.snapshots)
    conds = [(d, p) for d in cfg.datasets for p in cfg.label_noises]
    T = len(steps_at)
    curve = np.array([shape(i / (T - 1)) for i in range(T)])
    per = np.stack([np.ceil(curve / 2), np.floor(curve / 2)], -1).astype(np.int64)      # (T, 2)
    counts = np.broadcast_to(per[None, None, :, None, :],
                             (len(conds), len(cfg.widths), T, cfg.seeds, 2)).copy()
    errors = np.zeros(counts.shape[:4])
    return dr.summarize(cfg, conds, steps_at, counts, errors)


def test_checks_pass_on_rise_then_fall_and_fail_otherwise():
    cfg = _cfg()
    hump = _synthetic(cfg, lambda u: 2 + round(10 * u * np.exp(1 - 5 * u) * 5))   # peak early, back to ~2
    assert all(_verdicts(hump).values()), [c.measured for c in hump.checks]
    flat = _synthetic(cfg, lambda u: 2)
    assert not any(_verdicts(flat).values())
    rising = _synthetic(cfg, lambda u: 2 + round(8 * u))        # memorization: more islands, never merges
    v = _verdicts(rising)
    assert v["region counts rise above their initial value (fragmentation)"]
    assert not v["region counts fall after their peak (same-class regions merge)"]
    assert not v["rise then fall in the same run"]
    assert "NOT" in rising.notes


def test_gif_bytes():
    grids = np.zeros((3, 10, 10), dtype=np.uint8)
    grids[1, :5] = 1
    grids[2, :, :5] = 1
    gif = dr.regions_gif(grids, np.array([0, 1, 2]), (0, 1, 0, 1), None, "test")
    pytest.importorskip("PIL")
    assert gif[:4] == b"GIF8"
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(gif)).n_frames == 3


def test_tiny_end_to_end_run():
    cfg = _cfg(datasets=["spirals"], label_noises=[0.0, 0.2], widths=[4, 16], seeds=2, steps=30, snapshots=5,
               resolution=20, n_train=60, strip_steps=3)
    res = dr.run(cfg, RunContext())
    assert len(res.checks) == 3
    T = len(dr.snapshot_steps(30, 5))
    assert res.arrays["region_counts"].shape == (2, 2, T, 2, 2)
    assert (res.arrays["region_counts"].sum(-1) >= 1).all()       # every grid has at least one region
    assert res.arrays["picture_grids"].shape == (2, T, 20, 20)
    assert res.figures["regions_animation"]["gif"][:4] == b"GIF8"
    assert set(res.figures) == {"region_counts", "regions_vs_width", "region_strip", "regions_animation"}
    assert res.metrics["n_runs"] == 4
