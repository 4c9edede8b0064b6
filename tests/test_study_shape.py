"""The study shape: checks computed from their numbers, code fingerprints in run ids, figures redrawn from arrays."""

import json
import math

import pytest

from overparam.studies.checks import Check, fmt
from overparam.studies.fingerprint import closure, fingerprint, module_hash


@pytest.mark.parametrize("measured, comparison, expected, tolerance, passed", [
    (0.94, ">", 0.8, 0, True), (0.8, ">", 0.8, 0, False), (0.8, ">=", 0.8, 0, True),
    (0.1, "<", 0.2, 0, True), (0.3, "<=", 0.2, 0, False),
    (1.62, "~", 1.633, 0.01, True), (1.5, "~", 1.633, 0.01, False),
    (0.5, "in", (0.4, 0.6), 0, True), (0.7, "in", (0.4, 0.6), 0, False),
    ([3, 2, 2.05, 1], "decreasing", None, 0.1, True), ([3, 2, 2.5, 1], "decreasing", None, 0.1, False),
    ([1, 1, 1], "increasing", None, 0, False),            # flat is not a trend
    (math.nan, ">", 0.0, 0, False), ([1, math.nan, 3], "increasing", None, 0, False),
])
def test_verdict_comes_from_the_numbers(measured, comparison, expected, tolerance, passed):
    c = Check("c", measured=measured, comparison=comparison, expected=expected, tolerance=tolerance, source="s")
    assert c.passed is passed
    doc = c.to_dict()
    assert doc["passed"] is passed and doc["comparison"] == comparison
    assert ("passed" if passed else "failed") in doc["sentence"]
    json.dumps(doc, allow_nan=True)  # plain data


def test_invalid_check_fails_and_says_why():
    c = Check("gap", measured=0.1, comparison=">", expected=0.0, valid=False, invalid="target loss not reached")
    assert not c.passed and "not measurable: target loss not reached" in c.to_dict()["measured"]
    with pytest.raises(ValueError, match="say why"):
        Check("gap", measured=0.1, comparison=">", expected=0.0, valid=False)


def test_text_names_what_is_compared():
    c = Check("LB sharper", measured=2.5, comparison=">", expected=1.0, what="LB sharpness",
              reference="SB sharpness", unit="%", detail="3/4 seeds")
    d = c.to_dict()
    assert d["expected"] == "> 1 %, the SB sharpness" and d["measured"] == "LB sharpness 2.5 %; 3/4 seeds"
    assert d["measured_value"] == 2.5 and d["expected_value"] == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(measured=1.0, comparison="!="), "not one of"),
    (dict(measured=[1.0, 2.0], comparison=">", expected=1.0), "sequence"),
    (dict(measured=1.0, comparison="increasing"), "sequence"),
    (dict(measured=1.0, comparison="in", expected=2.0), "low, high"),
    (dict(measured=1.0, comparison=">"), "expected value"),
])
def test_malformed_checks_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Check("c", **kwargs)


def test_fmt():
    assert fmt(0.123456) == "0.123" and fmt(1234.5) == "1234" and fmt(1e-5) == "1e-05" and fmt(math.nan) == "nan"
    assert fmt([1.0, 0.5]) == "[1, 0.5]"


def test_fingerprint_follows_names_to_their_defining_modules():
    mods = closure("overparam.studies.double_descent")
    assert "overparam.train.loop" in mods and "overparam.train.widths" in mods
    assert "overparam.studies.lottery_ticket" not in mods     # not through the studies package's registry
    assert "overparam.measure.ntk" not in mods


def test_fingerprint_ignores_docstrings_and_comments_but_not_code(tmp_path, monkeypatch):
    import overparam.studies.fingerprint as fp

    src = tmp_path / "overparam"
    (src / "studies").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "studies" / "__init__.py").write_text("")
    mod = src / "studies" / "toy.py"
    monkeypatch.setattr(fp, "_ROOT", src)
    for cache in (fp._tree, fp._bindings, fp.imported_modules, fp.module_hash):
        cache.cache_clear()
    mod.write_text('"""Doc."""\nX = 1  # a comment\n')
    first = fingerprint("overparam.studies.toy")
    mod.write_text('"""Another doc."""\n\nX = 1\n')
    fp.module_hash.cache_clear()
    assert fingerprint("overparam.studies.toy") == first
    mod.write_text('"""Doc."""\nX = 2\n')
    fp.module_hash.cache_clear()
    assert fingerprint("overparam.studies.toy") != first
    for cache in (fp._tree, fp._bindings, fp.imported_modules, fp.module_hash):
        cache.cache_clear()


def test_every_study_has_a_fingerprint():
    from overparam.studies import REGISTRY

    prints = {name: s.fingerprint for name, s in REGISTRY.items()}
    assert all(len(p) == 12 for p in prints.values()) and len(set(prints.values())) == len(prints)
    assert module_hash("overparam.train.loop")


def test_rank_correlations_against_scipy_and_their_edge_cases():
    import numpy as np
    from scipy import stats as sps

    from overparam.measure.stats import kendall, spearman, spearman_test

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic)
    assert kendall(x, y) == pytest.approx(sps.kendalltau(x, y).statistic)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(kendall([1.0], [2.0]))
    assert spearman([1, 2, math.nan, 4], [1, 2, 3, 4]) == pytest.approx(1.0)   # NaN pairs dropped
    # stratified: within each group y rises with x, although across groups it falls
    xs = np.r_[np.arange(5), np.arange(5) + 10]
    ys = np.r_[np.arange(5) + 10, np.arange(5)]
    assert spearman(xs, ys) < 0 and spearman_test(xs, ys, groups=np.r_[np.zeros(5), np.ones(5)])[0] == pytest.approx(1)
