from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overparam.config import (ConfigError, StudyConfig, apply_overrides, param, parse_set, read_config_file,
                              resolve_config)


@dataclass
class Cfg(StudyConfig):
    width: int = param(8, "width", min=1, max=1000)
    lr: float = param(0.1, "lr", min=0.0)
    opt: str = param("sgd", "optimizer", choices=("sgd", "adam"))
    widths: list[int] = param([1, 2], "widths", min=1)
    flag: bool = param(False, "a flag")
    maybe: int | None = param(None, "optional", min=0)


PRESETS = {"quick": {"width": 4}, "paper": {"width": 100, "opt": "adam"}}


def test_precedence_defaults_preset_file_set_seed():
    cfg = resolve_config(Cfg, PRESETS, "paper", {"lr": 0.5, "width": 50}, {"width": "7"}, seed=3)
    assert (cfg.width, cfg.lr, cfg.opt, cfg.seed) == (7, 0.5, "adam", 3)


def test_types_are_coerced():
    cfg = resolve_config(Cfg, PRESETS, "quick", sets={"widths": "3,4,5", "flag": "true", "lr": "1e-3", "maybe": "2"})
    assert cfg.widths == [3, 4, 5] and cfg.flag is True and cfg.lr == 1e-3 and cfg.maybe == 2
    assert resolve_config(Cfg, PRESETS, sets={"widths": "[6, 7]", "maybe": "none"}).widths == [6, 7]


@pytest.mark.parametrize("sets, needle", [
    ({"nope": "1"}, "unknown key 'nope'"),
    ({"width": "abc"}, "width: cannot read 'abc' as int"),
    ({"width": "0"}, "width: 0 is out of range; allowed 1 <= value <= 1000"),
    ({"opt": "rmsprop"}, "opt: 'rmsprop' is not allowed; choose one of: sgd, adam"),
    ({"widths": "1,0"}, "widths: 0 is out of range"),
    ({"widths": ""}, "widths: must not be empty"),
    ({"lr": "nan"}, "lr: NaN is not allowed"),
    ({"flag": "maybe"}, "flag: cannot read"),
    ({"width": "1.5"}, "width: cannot read"),
])
def test_bad_values_name_the_key(sets, needle):
    with pytest.raises(ConfigError) as err:
        resolve_config(Cfg, PRESETS, "quick", sets=sets)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset_and_bad_set_syntax():
    with pytest.raises(ConfigError, match="unknown preset 'fast'; choose one of: quick, paper"):
        resolve_config(Cfg, PRESETS, "fast")
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set(["width"])


def test_config_file_toml(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('width = 12\nwidths = [3, 9]\nopt = "adam"\n')
    cfg = resolve_config(Cfg, PRESETS, "quick", read_config_file(f))
    assert (cfg.width, cfg.widths, cfg.opt) == (12, [3, 9], "adam")
    bad = tmp_path / "bad.toml"
    bad.write_text("width = = 3")
    with pytest.raises(ConfigError, match="not valid"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "missing.toml")
    wrong_type = tmp_path / "wt.toml"
    wrong_type.write_text('width = "wide"\n')
    with pytest.raises(ConfigError, match="width: cannot read 'wide'"):
        resolve_config(Cfg, PRESETS, "quick", read_config_file(wrong_type))


@given(st.integers(min_value=1, max_value=1000))
def test_any_in_range_int_round_trips(n):
    assert apply_overrides(Cfg, {}, {"width": str(n)}, "t")["width"] == n


@given(st.integers().filter(lambda n: n < 1 or n > 1000))
def test_any_out_of_range_int_is_refused(n):
    with pytest.raises(ConfigError, match="width"):
        apply_overrides(Cfg, {}, {"width": str(n)}, "t")


@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=20))
def test_int_lists_round_trip(values):
    assert apply_overrides(Cfg, {}, {"widths": ",".join(map(str, values))}, "t")["widths"] == values
