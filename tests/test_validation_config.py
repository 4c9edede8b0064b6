"""Every config value is bounded, checked the same way from --set, a TOML/JSON file and Python, and a config
whose arrays would not fit in memory is refused naming the key to lower."""

import dataclasses
import math
import tomllib
import typing

import numpy as np
import pytest
import torch

from overparam.commands.argtypes import seed_int
from overparam.config import (MEMORY_ENV, SEED_MAX, ConfigError, apply_overrides, available_memory, check_memory,
                              describe_config, fields_of, read_config_file, resolve_config)
from overparam.studies import REGISTRY
from overparam.studies.base import mlp_training_bytes

STUDIES = sorted(REGISTRY)


def _numeric(tp):
    """int or float if the field holds numbers (alone, optional, or in a list), else None."""
    for t in (tp, *typing.get_args(tp)):
        for u in (t, *typing.get_args(t)):
            if u in (int, float):
                return u
    return None


@pytest.mark.parametrize("name", STUDIES)
def test_every_numeric_key_is_bounded_and_the_defaults_are_valid(name):
    cls = REGISTRY[name].config
    hints = typing.get_type_hints(cls)
    for key, f in fields_of(cls).items():
        kind = _numeric(hints[key])
        if kind is not None and f.metadata.get("choices") is None:
            assert f.metadata.get("min") is not None and f.metadata.get("max") is not None, (name, key)
    assert describe_config(cls)   # builds the defaults, which must pass every check


@pytest.mark.parametrize("name", STUDIES)
def test_python_construction_checks_like_the_command_line(name):
    """cls(key=max+1) raises the same one-line error as --set key=max+1, for every bounded int key."""
    study = REGISTRY[name]
    hints = typing.get_type_hints(study.config)
    checked = 0
    for key, f in fields_of(study.config).items():
        if _numeric(hints[key]) is not int or f.metadata.get("max") is None:
            continue
        too_big = f.metadata["max"] + 1
        value = [too_big] if typing.get_origin(hints[key]) is list else too_big
        with pytest.raises(ConfigError) as from_python:
            study.config(**{key: value})
        with pytest.raises(ConfigError) as from_cli:
            resolve_config(study.config, study.presets, "quick", sets={key: str(too_big)})
        assert str(from_python.value) == str(from_cli.value)
        assert str(from_python.value).startswith(f"{key}: ") and "\n" not in str(from_python.value)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("study, key, value, needle", [
    ("double-descent", "epochs", "99999999999999999999999999", "epochs: 1.00e+26 is out of range; allowed 1 <= value"),
    ("double-descent", "batch_size", "1e12", "batch_size: 1000000000000 is out of range"),
    ("double-descent", "n_train", "1e12", "n_train: 1000000000000 is out of range"),
    ("double-descent", "n_test", "1e26", "n_test: 1.00e+26 is out of range"),
    ("double-descent", "widths", "1e12,2e12,3e12", "widths: 1000000000000 is out of range"),
    ("memorization", "width", "1e12", "width: 1000000000000 is out of range"),
    ("random-features", "bandwidth", "inf", "bandwidth: inf is not allowed; give a finite number"),
    ("tensorized", "min_compression", "1e400", "min_compression: inf is not allowed; give a finite number"),
    ("double-descent", "lr", "nan", "lr: NaN is not allowed"),
    ("double-descent", "seed", str(2**63), "seed: 9.22e+18 is out of range; allowed 0 <= value <= 9223372036854775807"),
    ("double-descent", "widths", ",".join(["8"] * 1001), "widths: 1001 values; allowed at most 1000"),
])
def test_issue_cases_are_refused_alike_from_set_toml_and_python(tmp_path, study, key, value, needle):
    """The same one-line message whether the value comes from --set, a TOML file or a Python caller."""
    s = REGISTRY[study]
    with pytest.raises(ConfigError) as from_set:
        resolve_config(s.config, s.presets, "quick", sets={key: value})
    assert needle in str(from_set.value) and "\n" not in str(from_set.value)
    is_list = typing.get_origin(typing.get_type_hints(s.config)[key]) is list
    toml_text = f"{key} = " + (f"[{value}]" if is_list else value) + "\n"
    toml = tmp_path / "c.toml"
    toml.write_text(toml_text)
    with pytest.raises(ConfigError) as from_toml:
        resolve_config(s.config, s.presets, "quick", read_config_file(toml))
    with pytest.raises(ConfigError) as from_python:
        s.config(**tomllib.loads(toml_text))
    assert str(from_set.value) == str(from_toml.value) == str(from_python.value)


def test_toml_float_epochs_is_read_as_an_integer_and_bounded(tmp_path):
    s = REGISTRY["double-descent"]
    toml = tmp_path / "c.toml"
    toml.write_text("epochs = 1e12\n")
    with pytest.raises(ConfigError, match=r"epochs: 1000000000000 is out of range; allowed 1 <= value <= 100000"):
        resolve_config(s.config, s.presets, "quick", read_config_file(toml))
    toml.write_text("epochs = 3e2\n")
    assert resolve_config(s.config, s.presets, "quick", read_config_file(toml)).epochs == 300
    assert resolve_config(s.config, s.presets, "quick", sets={"epochs": "3e2"}).epochs == 300


def test_seeds_are_int64_everywhere():
    s = REGISTRY["double-descent"]
    assert resolve_config(s.config, s.presets, "quick", seed=SEED_MAX).seed == SEED_MAX
    for bad in (SEED_MAX + 1, -1):
        with pytest.raises(ConfigError, match="seed: "):
            resolve_config(s.config, s.presets, "quick", seed=bad)
        with pytest.raises(ConfigError, match="seed: "):
            s.config(seed=bad)
    assert seed_int(str(SEED_MAX)) == SEED_MAX
    import argparse

    for bad in (str(SEED_MAX + 1), "-1", "1.5", "abc"):
        with pytest.raises(argparse.ArgumentTypeError, match="non-negative integer below 2\\*\\*63"):
            seed_int(bad)


def test_python_values_are_coerced_to_the_declared_types():
    cls = REGISTRY["double-descent"].config
    cfg = cls(widths=(8, 16, 32), lr=1, epochs=10.0)
    assert cfg.widths == [8, 16, 32] and isinstance(cfg.lr, float) and cfg.lr == 1.0 and cfg.epochs == 10
    for bad, needle in [({"epochs": "many"}, "epochs: cannot read 'many'"), ({"epochs": True}, "epochs: cannot read"),
                        ({"lr": float("inf")}, "lr: inf is not allowed"), ({"widths": 5}, "widths: cannot read"),
                        ({"epochs": -1}, "epochs: -1 is out of range; allowed 1 <= value <= 100000"),
                        ({"widths": [8, 4, 16]}, "widths: must be strictly increasing")]:
        with pytest.raises(ConfigError) as err:
            cls(**bad)
        assert str(err.value).startswith(needle), (bad, str(err.value))


# ---------------------------------------------------------------- memory

def test_memory_check_names_the_key_behind_the_largest_part(monkeypatch):
    cls = REGISTRY["double-descent"].config
    cfg = cls(widths=[30000, 40000, 60000])            # every width within its range
    need = sum(cfg.peak_bytes().values())
    assert need > 10 * 2**30                           # two 60000-wide layers: 3.6G weights x 4 copies
    check_memory(cfg, available=int(need) + 1)          # fits: no error
    with pytest.raises(ConfigError, match=r"^widths: this run needs about .* of memory, more than the 4\.0 GB "
                                          r"available; lower widths$"):
        check_memory(cfg, available=4 << 30)
    monkeypatch.setenv(MEMORY_ENV, str(4 << 30))
    assert available_memory() == 4 << 30
    s = REGISTRY["double-descent"]
    with pytest.raises(ConfigError, match="lower widths"):
        resolve_config(s.config, s.presets, "quick", sets={"widths": "30000,40000,60000"})
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(ConfigError, match=MEMORY_ENV):
        available_memory()


def test_available_memory_reads_the_machine(monkeypatch):
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    have = available_memory()
    assert have is None or 2**24 < have < 2**50


@pytest.mark.parametrize("name", STUDIES)
def test_presets_fit_a_laptop(name):
    """The estimates do not refuse the shipped setups: quick under 1 GB, paper under 8 GB."""
    s = REGISTRY[name]
    for preset, limit in (("quick", 1 << 30), ("paper", 8 << 30)):
        values = apply_overrides(s.config, {}, s.presets[preset], preset)
        if values.get("dataset") == "mnist":
            continue   # needs the user's files; its data term is checked in the next test
        cfg = s.config(**values)
        assert sum(cfg.peak_bytes().values()) < limit, (name, preset, cfg.peak_bytes())


def test_estimates_cover_the_arrays_a_run_allocates():
    """Ground truth: the real arrays (random features, an MLP's parameters) are within the estimate."""
    from overparam.models import MLP, count_parameters
    from overparam.studies.random_features import random_features

    cls = REGISTRY["random-features"].config
    cfg = cls(datasets=["digits"], n_train=300, n_test=100, ratios=[0.5, 1.0, 3.0])
    X = torch.randn(300, 64, dtype=torch.float64)
    Ftr = random_features("relu", X, 900, seed=0, bandwidth=1.0)
    Fte = random_features("relu", X[:100], 900, seed=0, bandwidth=1.0)
    gram = Ftr @ Ftr.T
    actual = (Ftr.numel() + Fte.numel() + gram.numel()) * 8
    assert actual <= cfg.peak_bytes()["n_train or ratios"] <= 4 * actual
    model = MLP(40, [64, 64], 10)
    weights = count_parameters(model) * 4
    assert 4 * weights <= mlp_training_bytes(1, 40, [64, 64], 10, batch=1) <= 4 * weights + 3 * 4 * 138
    mem = REGISTRY["weight-decay-sparsity"].config(n_train=512).peak_bytes()["n_train"]
    from overparam.measure.baselines1d import smoothing_spline_smoother

    assert smoothing_spline_smoother(np.linspace(0, 1, 512), 1e-4).nbytes * 12 <= mem


def test_a_long_grid_is_refused_by_length():
    with pytest.raises(ConfigError, match="ratios: 1001 values; allowed at most 1000"):
        REGISTRY["random-features"].config(ratios=list(np.linspace(0.01, 10, 1001)))


def test_nan_and_inf_never_pass_a_float_key():
    for name in STUDIES:
        cls = REGISTRY[name].config
        hints = typing.get_type_hints(cls)
        for key, f in fields_of(cls).items():
            if _numeric(hints[key]) is float:
                for bad in (math.nan, math.inf, -math.inf):
                    value = [bad] if typing.get_origin(hints[key]) is list else bad
                    with pytest.raises(ConfigError, match=f"^{key}: "):
                        cls(**{key: value})


def test_fields_are_dataclass_fields():
    assert all(dataclasses.is_dataclass(REGISTRY[n].config) for n in STUDIES)
