import json
import os
import subprocess
import sys

import numpy as np
import pytest

from overparam.store import RunStore, StoreError, run_id_for, save_arrays, write_json


def test_run_id_is_a_hash_of_config_seed_and_version():
    a = run_id_for("s", {"x": 1, "seed": 0})
    assert a == run_id_for("s", {"seed": 0, "x": 1})          # key order does not matter
    assert a != run_id_for("s", {"x": 1, "seed": 1})          # the seed does
    assert a != run_id_for("t", {"x": 1, "seed": 0})
    assert a != run_id_for("s", {"x": 1, "seed": 0}, version=2)
    assert len(a) == 12 and int(a, 16) >= 0


def test_lifecycle_writes_row_and_results_json(tmp_path):
    store = RunStore(tmp_path)
    rec = store.begin("abc123", "demo", {"seed": 0, "w": [1, 2]})
    assert rec.status == "running" and rec.dir == tmp_path / "demo" / "abc123"
    assert json.loads((rec.dir / "config.json").read_text()) == {"seed": 0, "w": [1, 2]}
    assert json.loads((rec.dir / "results.json").read_text())["status"] == "running"
    done = store.finish("abc123", "done", {"err": np.float64(0.25), "bad": float("nan")},
                        [{"name": "c", "expected": "e", "measured": "m", "passed": True, "source": "s"}], ["f.png"])
    results = json.loads((rec.dir / "results.json").read_text())
    assert set(results) >= {"run_id", "study", "status", "config", "metrics", "checks", "figures"}
    assert results["status"] == "done" and results["metrics"] == {"err": 0.25, "bad": None}
    assert done.verdict == "1/1 checks passed"
    again = RunStore(tmp_path)
    assert again.get("abc123").status == "done" and [r.run_id for r in again.list_runs("demo")] == ["abc123"]


def test_resolve_by_prefix(tmp_path):
    store = RunStore(tmp_path)
    store.begin("aaa111", "s", {})
    store.begin("aab222", "s", {})
    assert store.resolve("aaa").run_id == "aaa111"
    with pytest.raises(StoreError, match="ambiguous"):
        store.resolve("aa")
    with pytest.raises(StoreError, match="no run 'zz'"):
        store.resolve("zz")


def test_finish_needs_a_final_status(tmp_path):
    store = RunStore(tmp_path)
    store.begin("r1", "s", {})
    with pytest.raises(ValueError):
        store.finish("r1", "running")


def test_run_left_running_by_a_dead_process_becomes_interrupted(tmp_path):
    # A child process begins a run and is killed before finishing it (SIGKILL leaves no chance to clean up).
    code = ("import os, sys; sys.path.insert(0, %r); from overparam.store import RunStore; "
            "RunStore(%r).begin('dead01', 's', {'seed': 0}); os._exit(0)") % (
        os.path.join(os.path.dirname(__file__), "..", "src"), str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True)
    store = RunStore(tmp_path)
    rec = store.get("dead01")
    assert rec.status == "interrupted" and "ended without recording" in rec.error
    assert json.loads((rec.dir / "results.json").read_text())["status"] == "interrupted"


def test_atomic_writes_leave_no_temp_files(tmp_path):
    write_json(tmp_path / "a.json", {"x": [1, 2]})
    save_arrays(tmp_path / "a.npz", {"w": np.arange(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npz"]
    assert np.load(tmp_path / "a.npz")["w"].tolist() == [0, 1, 2]
