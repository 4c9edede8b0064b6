"""The generalization-measures study (Jiang et al. 2019).

Kendall tau and the granulated tau against exact answers, the fractional design's structure, the summary
driven with synthetic populations (each check passes on Jiang et al.'s picture and fails without it), and one
tiny real run end to end.
"""

import itertools

import matplotlib
import numpy as np
import pytest
from scipy.stats import kendalltau

matplotlib.use("Agg")

from overparam.config import ConfigError, resolve_config  # noqa: E402
from overparam.studies import base  # noqa: E402
from overparam.studies import generalization_measures as gm  # noqa: E402
from overparam.studies.base import RunContext  # noqa: E402


def _cfg(**sets):
    return resolve_config(gm.GeneralizationMeasuresConfig, gm.PRESETS, "quick", sets=sets)


def _verdicts(result):
    return {c.name: c.passed for c in result.checks}


def test_registered_with_both_presets_and_validated():
    assert set(base.REGISTRY["generalization-measures"].presets) >= {"quick", "paper"}
    resolve_config(gm.GeneralizationMeasuresConfig, gm.PRESETS, "paper", sets={})
    with pytest.raises(ConfigError, match="lrs"):
        _cfg(lrs=[0.1, 0.2, 0.3])              # half design: two values per factor
    with pytest.raises(ConfigError, match="depths"):
        _cfg(depths=[1, 1])
    _cfg(lrs=[0.1, 0.2, 0.3], design="full")


def test_half_design_is_a_resolution_v_fraction_crossed_with_widths():
    cfg = _cfg()
    pts = gm.design_points(cfg)
    assert len(pts) == 2 * 16
    others = gm.FACTORS[1:]
    combos = {tuple(p[f] for f in others) for p in pts}
    assert len(combos) == 16
    for c in combos:                             # the defining relation I = ABCDE
        signs = [1 if v == getattr(cfg, k)[1] else -1
                 for v, k in zip(c, ("depths", "batch_sizes", "lrs", "weight_decays", "label_noises"))]
        assert np.prod(signs) == 1
    for a, b in itertools.combinations(combos, 2):   # any two runs differ in >= 2 of the five factors
        assert sum(x != y for x, y in zip(a, b)) >= 2
    for c in combos:                             # every width at every combination
        assert sorted(p["width"] for p in pts if tuple(p[f] for f in others) == c) == cfg.widths
    full = gm.design_points(_cfg(design="full"))
    assert len(full) == 2 ** 6 and len({tuple(p.values()) for p in full}) == 64


def test_kendall_matches_scipy_and_handles_nan_and_constants():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    assert gm.kendall(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert gm.kendall(x, 2 * x + 1) == pytest.approx(1.0)
    assert gm.kendall(x, -x) == pytest.approx(-1.0)
    x2 = x.copy()
    x2[:5] = np.nan
    assert gm.kendall(x2, y) == pytest.approx(kendalltau(x[5:], y[5:]).statistic)
    assert np.isnan(gm.kendall(np.array([1.0, np.nan, np.nan]), np.array([1.0, 2.0, 3.0])))
    assert np.isnan(gm.kendall(np.ones(5), np.arange(5.0)))


def test_granulated_tau_on_a_small_factorial():
    # 2 widths x 2 lrs, everything else fixed: the measure follows the gap along width, opposes it along lr
    rows = []
    for w, lr in itertools.product((16, 64), (0.1, 0.3)):
        rows.append({"width": w, "depth": 1, "batch_size": 32, "lr": lr, "weight_decay": 0.0, "label_noise": 0.0,
                     "seed": 0})
    gap = np.array([1.0 if r["width"] == 64 else 0.0 for r in rows]) + np.array([0.1 * (r["lr"] == 0.3) for r in rows])
    meas = np.array([1.0 if r["width"] == 64 else 0.0 for r in rows]) - np.array([0.1 * (r["lr"] == 0.3) for r in rows])
    psi = gm.granulated_tau(rows, meas, gap)
    assert psi["width"] == 1.0 and psi["lr"] == -1.0
    for f in ("depth", "batch_size", "weight_decay", "label_noise"):
        assert np.isnan(psi[f])                      # never varied alone
    # models of different seeds are never paired
    rows2 = [dict(r, seed=i) for i, r in enumerate(rows)]
    assert all(np.isnan(v) for v in gm.granulated_tau(rows2, meas, gap).values())


# ----------------------------------------------------------------------------------------------- summary
ALL = [m for f in gm.FAMILIES.values() for m in f]
NAMES = ["sharpness-based measures predict the gap better than norm-based ones",
         "magnitude-aware PAC-Bayes flatness correlates positively with the gap",
         "spectral-norm measures are unreliable"]


def _population(sharp="good", norm="mixed", mag_sign=1.0, n=24, reached=True, seed=0):
    """Synthetic models: the gap grows with label noise and lr; measures built from it."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        f = {"width": (16, 64)[i % 2], "depth": (1, 2)[(i // 2) % 2], "batch_size": (32, 128)[(i // 4) % 2],
             "lr": (0.1, 0.3)[(i // 8) % 2], "weight_decay": 0.0, "label_noise": (0.0, 0.1)[(i // 16) % 2],
             "seed": i // 32}
        gap = 0.05 + f["label_noise"] + 0.1 * f["lr"] + 0.01 * rng.normal()
        noise = lambda s=1.0: s * rng.normal()  # noqa: E731
        meas = {}
        for m in ALL:
            fam = gm.FAMILY_OF[m]
            if fam == "sharpness":
                meas[m] = gap + 0.003 * noise() if sharp == "good" else noise()
            elif fam in gm.NORM_BASED:
                if norm == "mixed":      # right but noisy, the spectral products the wrong way round
                    meas[m] = (-gap if m in gm.SPECTRAL[:2] else gap) + 0.05 * noise()
                elif norm == "perfect":
                    meas[m] = gap
                else:                    # all positive but noisy
                    meas[m] = gap + 0.05 * noise()
            else:
                meas[m] = noise()
        meas["pacbayes_mag_flatness"] = mag_sign * (gap + 0.003 * noise())
        rows.append({**f, "reached": reached or i % 3 != 0, "steps": 100, "gap": gap, "train_error": 0.0,
                     "test_error": gap, "measures": meas})
    return rows


def test_checks_pass_on_jiangs_picture():
    res = gm.summarize(_cfg(), _population())
    v = _verdicts(res)
    assert list(v) == NAMES and all(v.values()), res.checks
    assert gm.FAMILY_OF[res.metrics["ranking"][0][0]] == "sharpness"
    taus = [t for _, _, t in res.metrics["ranking"]]
    assert taus == sorted(taus, reverse=True)
    assert "generalization_measures" in res.figures
    assert res.arrays["measures"].shape == (24, len(res.arrays["measure_names"]))


def test_sharpness_check_fails_when_norms_predict_better():
    v = _verdicts(gm.summarize(_cfg(), _population(sharp="random", norm="perfect")))
    assert not v[NAMES[0]]
    # the tau margin is honoured
    v = _verdicts(gm.summarize(_cfg(min_tau_gap=1.0), _population()))
    assert not v[NAMES[0]]


def test_pacbayes_check_fails_on_a_negative_correlation():
    v = _verdicts(gm.summarize(_cfg(), _population(mag_sign=-1.0)))
    assert not v[NAMES[1]] and v[NAMES[2]]


def test_spectral_check_fails_when_every_spectral_measure_is_right():
    v = _verdicts(gm.summarize(_cfg(), _population(norm="positive")))
    assert not v[NAMES[2]] and v[NAMES[1]]


def test_models_off_target_are_left_out_and_too_few_fail_every_check():
    res = gm.summarize(_cfg(), _population(reached=False))
    assert res.metrics["n_models"] == 24 and res.metrics["n_at_target"] == 16
    res = gm.summarize(_cfg(), _population(n=6))
    assert not any(_verdicts(res).values())


# ------------------------------------------------------------------------------------------ tiny real run
def test_tiny_real_run_end_to_end():
    cfg = _cfg(design="full", n_train=120, n_test=100, widths=[4, 8], depths=[1], batch_sizes=[32], lrs=[0.2],
               weight_decays=[0.0], label_noises=[0.0, 0.2], seeds=2, target=0.5, max_steps=400, chunk_steps=20,
               pacbayes_samples=2, pacbayes_bisect=3, sharpness_iters=2)
    res = gm.run(cfg, RunContext())
    m = res.metrics
    assert m["n_models"] == 8
    assert [c.name for c in res.checks] == NAMES
    assert set(m["tau"]) == set(ALL)
    assert all(-1 <= t <= 1 for _, _, t in m["ranking"])
    assert set(m["granulated_factors"]) <= {"width", "label_noise"} and m["granulated_factors"]
    assert res.arrays["factors"].shape == (8, 6)
    assert np.all(np.isfinite(res.arrays["gap"]))
    import matplotlib.pyplot as plt
    plt.close("all")
