"""Fuzzing the command line with bad input: every key of every study, every `measure` flag.

For each bad invocation the contract is: exit status 2, exactly one line on stderr, nothing on stdout,
nothing written to the store (its folder never appears), no child process left behind, and no work
started (the runner's ``execute`` and the instruments are replaced by tripwires that count calls).

Bad values are derived from each key's declared type and bounds (below the minimum, above the maximum,
1e12, 10**30, inf, nan, 1e400, the wrong type, empty, over-long lists) plus a few seeded random junk
strings, and are sent through ``--set``, ``--config`` (TOML and JSON) and ``--seed``. The bulk runs
``overparam.cli.main`` in-process; a small sample runs as real subprocesses.

Standalone: ``python tests/test_fuzz_cli.py --count`` runs every case and prints the tallies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import random
import signal
import sys
import tempfile
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import run_cli  # noqa: E402

from overparam import cli  # noqa: E402
from overparam.config import INT_LIMIT, MAX_LIST_LENGTH, MEMORY_ENV, fields_of  # noqa: E402
from overparam.studies import REGISTRY  # noqa: E402

FUZZ_MEMORY = str(4 << 30)   # the memory check assumes 4 GB, whatever the machine has
JUNK_SEED = 14


# ---------------------------------------------------------------- bad values from a key's type and bounds

def _unwrap(tp):
    """(scalar type, is a list, may be None)."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if typing.get_origin(tp) in (list, tuple):
        return (typing.get_args(tp) or (str,))[0], True, optional
    return tp, False, optional


def _bad_scalars(key: str, field: dataclasses.Field, base) -> list[str]:
    meta = field.metadata
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    out: list[str] = []
    if choices is not None:
        out.append("not-a-choice" if base is str else "5")
    if base is int:
        hi = INT_LIMIT if hi is None else hi
        if lo is not None:
            out.append(str(lo - 1))
        out.append(str(hi + 1))
        if hi < 1e12:
            out.append("1e12")
        out += [str(10**30), "inf", "nan", "1e400", "1.5", "abc", ""]
    elif base is float:
        if lo is not None:
            out.append(repr(lo - max(1.0, abs(lo))))
        if hi is not None:
            out.append(repr(hi + max(1.0, abs(hi))))
            if hi < 1e12:
                out.append("1e12")
        out += ["inf", "-inf", "nan", "1e400", "abc", ""]
    elif base is bool:
        out += ["maybe", "2", ""]
    elif base is str and choices is None:
        out.append("/no/such/dir" if key == "data_dir" else "not-a-choice")
    elif base is str:
        out.append("")
    return list(dict.fromkeys(out))


def bad_values(study_name: str) -> list[tuple[str, str]]:
    """(key, bad text for --set) for every key of a study's config."""
    cfg = REGISTRY[study_name].config
    hints = typing.get_type_hints(cfg)
    rng = random.Random(f"{JUNK_SEED}:{study_name}")
    cases = []
    for key, field in fields_of(cfg).items():
        base, is_list, _ = _unwrap(hints[key])
        scalars = _bad_scalars(key, field, base)
        if is_list:
            good = str(field.default_factory()[0])
            values = [f"{good},{v}" if v else "" for v in scalars] + ["[1,", ",".join([good] * (MAX_LIST_LENGTH + 1))]
        else:
            values = scalars
        if base in (int, float):   # seeded junk: punctuation, letters, huge exponents
            values.append(rng.choice(["1e", "--3", "0x1g", "½", "1e-400x", "∞", "1,,"]) + rng.choice(["", "x", "?"]))
        cases += [(key, v) for v in dict.fromkeys(values)]
    return cases


def file_cases(study_name: str) -> list[tuple[str, object]]:
    """(key, bad value as a TOML/JSON value) for every numeric key: wrong types, out of range, non-finite."""
    cfg = REGISTRY[study_name].config
    hints = typing.get_type_hints(cfg)
    cases = []
    for key, field in fields_of(cfg).items():
        base, is_list, _ = _unwrap(hints[key])
        hi = field.metadata.get("max")
        if base in (int, float):
            values = [10**30, float("inf"), float("nan"), "abc", True]
            if hi is not None and hi < 1e12:
                values.append(1e12)
            values = [[v] if is_list else v for v in values]
        else:
            values = [123, [1, 2]] if not is_list else [7, []]
        cases += [(key, v) for v in values]
    return cases


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "inf" if v == math.inf else "-inf" if v == -math.inf else "nan" if v != v else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


# ---------------------------------------------------------------- the harness

@dataclasses.dataclass
class Tally:
    tried: int = 0
    one_line: int = 0
    tracebacks: int = 0
    runs_written: int = 0
    orphans: int = 0
    started: int = 0
    failures: list = dataclasses.field(default_factory=list)

    def add(self, argv, code, out, err, store: Path, started: int, children: int) -> None:
        self.tried += 1
        lines = err.strip().splitlines()
        written = store.exists()
        ok = code == 2 and len(lines) == 1 and out == "" and not written and not started and not children
        self.one_line += code == 2 and len(lines) == 1 and out == ""
        self.tracebacks += "Traceback" in err
        self.runs_written += written
        self.orphans += children
        self.started += started
        if not ok:
            self.failures.append((argv, code, out[-300:], err[-500:], written, started, children))

    def summary(self) -> str:
        return (f"cases tried {self.tried}, one-line exits {self.one_line}, tracebacks {self.tracebacks}, "
                f"runs written {self.runs_written}, orphans {self.orphans}, "
                f"started work on invalid input {self.started}")


def child_pids() -> list[int]:
    """Live children of this process (zombies are reaped first)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


class Tripwires:
    """Replace everything that does work (running a study, the instruments) by counters."""

    TARGETS = [("overparam.runner", "execute"), ("overparam.runner", "compute"),
               ("overparam.measure.hessian", "hessian_eigs"), ("overparam.measure.hessian", "hessian_density"),
               ("overparam.measure.hessian", "hessian_trace"), ("overparam.measure.ntk", "ntk_eigs"),
               ("overparam.measure.sharpness", "sharpness"), ("overparam.measure.interpolate", "interpolate"),
               ("overparam.measure.landscape", "landscape"),
               ("overparam.measure.generalization", "generalization_measures")]

    def __init__(self):
        self.calls = 0

    def _trip(self, *args, **kwargs):
        self.calls += 1
        raise RuntimeError("tripwire: work started on invalid input")

    def __enter__(self):
        import importlib

        self.saved = []
        for module, name in self.TARGETS:
            mod = importlib.import_module(module)
            self.saved.append((mod, name, getattr(mod, name)))
            setattr(mod, name, self._trip)
        return self

    def __exit__(self, *exc):
        for mod, name, original in self.saved:
            setattr(mod, name, original)


def run_in_process(tally: Tally, argv: list[str], store: Path, wires: Tripwires) -> None:
    out, err = io.StringIO(), io.StringIO()
    before = wires.calls
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["--store", str(store), *argv])
        except SystemExit as exc:      # argparse --help and friends
            code = exc.code
        except BaseException as exc:   # an escaped exception is a traceback for the user
            import traceback

            err.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception(exc)))
            code = 1
    tally.add(argv, code, out.getvalue(), err.getvalue(), store, wires.calls - before, len(child_pids()))


@contextlib.contextmanager
def fuzz_environment():
    """Fixed memory budget; signal handlers and the environment restored afterwards."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    old = os.environ.get(MEMORY_ENV)
    os.environ[MEMORY_ENV] = FUZZ_MEMORY
    build_parser = cli._build_parser
    cli._build_parser = functools.cache(build_parser)   # parsing, not building the parser, is under test
    try:
        with Tripwires() as wires:
            yield wires
    finally:
        cli._build_parser = build_parser
        for s, h in handlers.items():
            signal.signal(s, h)
        if old is None:
            os.environ.pop(MEMORY_ENV, None)
        else:
            os.environ[MEMORY_ENV] = old


# ---------------------------------------------------------------- the cases: `run`

def run_cases(study_name: str, workdir: Path) -> list[list[str]]:
    cases = [["run", study_name, "--set", f"{key}={value}"] for key, value in bad_values(study_name)]
    for i, (key, value) in enumerate(file_cases(study_name)):
        if i % 2:
            path = workdir / f"{study_name}-{i}.toml"
            path.write_text(f"{key} = {_toml_value(value)}\n")
        else:
            path = workdir / f"{study_name}-{i}.json"
            path.write_text(json.dumps({key: value}))
        cases.append(["run", study_name, "--config", str(path)])
    return cases


SEED_CASES = ["-1", str(2**63), str(10**30), "abc", "1.5", "", "nan", "1e3"]

OTHER_RUN_CASES = [
    ["run", "no-such-study"],
    ["run", "double-descent", "--preset", "huge"],
    ["run", "double-descent", "--set", "widths"],
    ["run", "double-descent", "--set", "nope=1"],
    ["run", "double-descent", "--config", "/no/such/file.toml"],
    ["run", "double-descent", "--data-dir", "/no/such/dir"],
    ["run", "double-descent", "--set", "dataset=mnist"],
    ["run", "lottery-ticket", "--data-dir", "/no/such/dir"],
    ["run", "gd-vs-sgd", "--data-dir", "/no/such/dir"],
    ["run", "random-features", "--set", "datasets=mnist", "--data-dir", "/no/such/dir"],
    ["run", "am-capacity", "--data-dir", "/tmp"],
    # within every key's range, beyond the (fixed, 4 GB) memory: refused naming the key
    ["run", "double-descent", "--set", "widths=30000,40000,60000"],
    ["run", "random-features", "--set", "n_train=100000", "--set", "datasets=mnist1d"],
    ["run", "ntk-spectrum", "--set", "n_points=90000", "--set", "fit_last=100"],
    ["run", "weight-decay-sparsity", "--set", "n_train=100000"],
    ["run", "decision-regions", "--set", "resolution=1024", "--set", "widths=60000", "--set", "seeds=64"],
    ["run", "spawn-vs-slide", "--set", "seeds=100000", "--set", "grid=100000"],
]


def all_run_cases(workdir: Path) -> list[list[str]]:
    cases = [c for name in REGISTRY for c in run_cases(name, workdir)]
    cases += [["run", "double-descent", "--seed", s] for s in SEED_CASES]
    toml = workdir / "seed.toml"
    toml.write_text(f"seed = {2**63}\n")
    cases.append(["run", "double-descent", "--config", str(toml)])
    return cases + OTHER_RUN_CASES


# ---------------------------------------------------------------- the cases: `measure`

MODEL_PY = """
import sys
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4))

def sized(classes):
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, classes))

def broken():
    raise ValueError("cannot build")

def exits():
    sys.exit(0)

def not_a_module():
    return 42
"""


def measure_files(d: Path) -> dict[str, str]:
    """A model file, weights and data files: good ones, and every kind of wrong one."""
    (d / "mynet.py").write_text(MODEL_PY)
    (d / "exits.py").write_text("import sys\nsys.exit(0)\n")
    (d / "raises.py").write_text("raise RuntimeError('import-time failure')\n")
    ns: dict = {}
    exec(MODEL_PY, ns)
    torch.manual_seed(0)
    model = ns["build"]()
    torch.save(model.state_dict(), d / "net.pt")
    torch.save(model, d / "whole.pt")
    nan_state = {k: v.clone() for k, v in model.state_dict().items()}
    nan_state["0.weight"][0, 0] = float("nan")
    torch.save(nan_state, d / "nan_weights.pt")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3)).astype(np.float32)
    y = rng.integers(0, 4, 30)
    np.savez(d / "data.npz", X=X, y=y)
    np.savez(d / "weights.npz", w=X)
    np.save(d / "data.npy", X)
    (d / "text.npz").write_text("this is not an archive\n")
    (d / "text.pt").write_text("this is not a checkpoint\n")
    bad_data = {
        "nan": dict(X=np.where(np.arange(90).reshape(30, 3) == 7, np.nan, X), y=y),
        "inf": dict(X=np.where(np.arange(90).reshape(30, 3) == 7, np.inf, X), y=y),
        "complex": dict(X=X + 1j, y=y),
        "strings": dict(X=X.astype(str), y=y),
        "string_labels": dict(X=X, y=y.astype(str)),
        "labels_high": dict(X=X, y=y + 10),
        "labels_negative": dict(X=X, y=y - 5),
        "rows": dict(X=X, y=y[:20]),
        "empty": dict(X=X[:0], y=y[:0]),
        "no_y": dict(X=X),
        "huge": dict(X=X.astype(np.float64) * 1e300, y=y),
        "scalar": dict(X=np.float32(1.0), y=np.int64(1)),
        "wrong_width": dict(X=rng.standard_normal((30, 5)), y=y),
    }
    for name, arrays in bad_data.items():
        np.savez(d / f"{name}.npz", **arrays)
    return {"dir": str(d)}


def measure_cases(d: Path) -> list[list[str]]:
    good = ["--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "net.pt"), "--data", str(d / "data.npz")]
    model_only = ["--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "net.pt")]
    instruments = ["hessian", "ntk", "sharpness", "interpolate", "landscape", "generalization"]
    extra = {"interpolate": ["--weights-b", str(d / "net.pt")]}
    cases: list[list[str]] = []
    bad_models = [f"{d / 'mynet.py'}", "justaname", f"{d / 'nope.py'}:build", f"{d / 'mynet.py'}:nothing",
                  f"{d / 'mynet.py'}:broken", f"{d / 'mynet.py'}:exits", f"{d / 'mynet.py'}:sized",
                  f"{d / 'mynet.py'}:sized(classes=os.system('true'))", f"{d / 'mynet.py'}:sized(1, 2, 3)",
                  f"{d / 'mynet.py'}:sized(classes=",  f"{d / 'mynet.py'}:not_a_module",
                  f"{d / 'exits.py'}:build", f"{d / 'raises.py'}:build", "no.such.module:build"]
    bad_weights = ["missing.pt", "whole.pt", "nan_weights.pt", "weights.npz", "data.npy", "text.pt", "data.npz"]
    bad_data = ["missing.npz", "data.npy", "text.npz", "net.pt", "nan.npz", "inf.npz", "complex.npz", "strings.npz",
                "string_labels.npz", "labels_high.npz", "labels_negative.npz", "rows.npz", "empty.npz", "no_y.npz",
                "huge.npz", "scalar.npz", "wrong_width.npz"]
    for inst in instruments:
        tail = extra.get(inst, [])
        for spec in bad_models:
            cases.append(["measure", inst, "--model", spec, "--weights", str(d / "net.pt"),
                          "--data", str(d / "data.npz"), *tail])
        for w in bad_weights:
            cases.append(["measure", inst, "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / w),
                          "--data", str(d / "data.npz"), *tail])
        for data in bad_data:
            if inst == "ntk" and data in ("string_labels.npz", "labels_high.npz", "labels_negative.npz",
                                          "no_y.npz", "rows.npz"):
                continue   # ntk reads X only
            cases.append(["measure", inst, *model_only, "--data", str(d / data), *tail])
        cases.append(["measure", inst, "--model", f"{d / 'mynet.py'}:build", "--data", str(d / "data.npz"), *tail])
        cases.append(["measure", inst, *good, "--random-init", *tail])
        cases.append(["measure", inst, *good, "--no-such-flag", *tail])
        for flag in ("--n", "--batch-size", "--threads") if inst != "ntk" else ("--n", "--block", "--top"):
            for value in ("0", "-1", "abc", "1e400", "1.5", ""):
                cases.append(["measure", inst, *good, flag, value, *tail])
        cases.append(["measure", inst, *good, "--threads" if inst != "ntk" else "--top", str(10**30), *tail])
        if inst != "ntk":
            cases += [["measure", inst, *good, "--loss", "hinge", *tail], ["measure", inst, *good, "--dtype", "int8",
                                                                            *tail]]
    flags = {
        "hessian": {"--k": ["0", "-3", "x"], "--seed": ["-1", str(2**63), "x"], "--which": ["middle"],
                    "--method": ["qr"], "--curvature": ["fisher"], "--mode": ["test"]},
        "ntk": {"--memory-gb": ["0", "-1", "nan", "inf", "1e400", "x", "1e9"], "--fit": ["x", "0,", "2,3", "5,2",
                                                                                          "2,100000"],
                "--mode": ["diagonal"], "--method": ["magic"]},
        "sharpness": {"--eps": ["0", "-1", "nan", "inf", "1e9"], "--subspace": ["0", "1000"],
                      "--maxiter": ["0"], "--seed": ["-1", str(2**63)], "--mode": ["test"]},
        "interpolate": {"--steps": ["1", "0", "x", str(10**12)], "--extend": ["-1", "inf", "nan", "1e9"],
                        "--bn": ["none"], "--out": ["/no/such/dir/x.png", str(d / "x.gif")]},
        "landscape": {"--steps": ["1", "0", "x", str(10**12)], "--dims": ["3", "0"], "--span": ["0", "-1", "inf",
                                                                                               "1e9"],
                      "--seed": ["-1"], "--directions": ["up"], "--ignore": ["all"],
                      "--out": ["/no/such/dir/x.png", str(d / "x.gif")]},
        "generalization": {"--tolerance": ["0", "-1", "nan"], "--samples": ["0"], "--seed": ["-1"],
                           "--init": [str(d / "missing.pt"), str(d / "whole.pt")]},
    }
    for inst, table in flags.items():
        for flag, values in table.items():
            for value in values:
                cases.append(["measure", inst, *good, *extra.get(inst, []), flag, value])
    cases.append(["measure", "landscape", *good, "--steps", "100000", "--dims", "2"])
    cases.append(["measure", "interpolate", *good])                                          # no --weights-b
    cases.append(["measure", "interpolate", *good, "--weights-b", str(d / "whole.pt")])
    cases.append(["measure", "interpolate", *good, "--weights-b", str(d / "net.pt"),
                  "--model-b", f"{d / 'mynet.py'}:broken"])
    cases.append(["measure", "no-such-instrument", *good])
    return cases


# ---------------------------------------------------------------- the tests

def run_all(workdir: Path, which: str = "all") -> Tally:
    tally = Tally()
    store = workdir / "store"
    d = workdir / "user"
    d.mkdir(exist_ok=True)
    measure_files(d)
    cases = []
    if which in ("all", "run"):
        cases += all_run_cases(workdir)
    if which in ("all", "measure"):
        cases += measure_cases(d)
    with fuzz_environment() as wires:
        for argv in cases:
            run_in_process(tally, argv, store, wires)
    return tally


@pytest.mark.parametrize("which", ["run", "measure"])
def test_every_bad_invocation_is_one_line_exit_2_and_does_nothing(tmp_path, which):
    tally = run_all(tmp_path, which)
    print(f"\n{which}: {tally.summary()}")
    assert tally.tried > (2000 if which == "run" else 300)
    assert not tally.failures, "\n".join(map(repr, tally.failures[:10]))
    assert (tally.tracebacks, tally.runs_written, tally.orphans, tally.started) == (0, 0, 0, 0)


def test_bad_values_are_really_out_of_bounds():
    """The generator's values are bad by construction: a sample checked against the config directly."""
    from overparam.config import ConfigError, apply_overrides

    for name in ("double-descent", "random-features", "spawn-vs-slide"):
        cls = REGISTRY[name].config
        for key, value in bad_values(name):
            with pytest.raises(ConfigError) as err:
                cls(**apply_overrides(cls, {}, {key: value}, "--set"))
            assert "\n" not in str(err.value) and key in str(err.value), (key, value, str(err.value))


def test_a_sample_in_real_subprocesses(tmp_path):
    """The same contract end to end: a fresh interpreter, real exit status, real file descriptors."""
    d = tmp_path / "user"
    d.mkdir()
    measure_files(d)
    toml = tmp_path / "bad.toml"
    toml.write_text("epochs = 1e12\n")
    sample = [
        ["run", "double-descent", "--set", "epochs=99999999999999999999999999", "--seed", "3"],
        ["run", "double-descent", "--config", str(toml)],
        ["measure", "landscape", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "net.pt"),
         "--data", str(d / "data.npz"), "--steps", "100000", "--dims", "2"],
        ["measure", "hessian", "--model", f"{d / 'mynet.py'}:build", "--weights", str(d / "whole.pt"),
         "--data", str(d / "data.npz")],
    ]
    for argv in sample:
        store = tmp_path / "store"
        out = run_cli(*argv, store=store, env={MEMORY_ENV: FUZZ_MEMORY})
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and out.stdout == "", (argv, out.stdout, out.stderr)
        assert "\x1b" not in out.stderr and "Traceback" not in out.stderr
        assert not store.exists(), argv
    assert child_pids() == [] and not processes_mentioning(str(tmp_path))


def processes_mentioning(text: str) -> list[int]:
    """Processes (anyone's children) whose command line mentions ``text``: none may outlive the command."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
    return found


def main(argv: list[str]) -> int:
    if "--count" not in argv:
        print("usage: python tests/test_fuzz_cli.py --count", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tally = run_all(Path(tmp))
    print(tally.summary())
    for failure in tally.failures[:20]:
        print("FAIL", failure)
    return 0 if not tally.failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
