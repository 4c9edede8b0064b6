"""Sweeps: grid expansion, skipping done points, failures, SIGKILL resumption, and the Ray backend."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli
from overparam.config import ConfigError
from overparam.runner import get_study
from overparam.sweep import expand, parse_grid

TINY = ["--set", "dataset=digits", "--set", "n_train=150", "--set", "n_test=100", "--set", "widths=2,8,32",
        "--set", "epochs=20", "--set", "optimizer=adam", "--set", "batch_size=150", "--set", "lr=0.01"]


def _rows(store):
    if not (store / "overparam.db").exists():
        return []
    conn = sqlite3.connect(store / "overparam.db", timeout=30)
    try:
        return conn.execute("SELECT run_id, study, status, finished FROM runs").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_grid_expansion_and_validation():
    study = get_study("double-descent")
    assert parse_grid(["a=1,2", "widths=[8,16],[32,64]"]) == {"a": ["1", "2"], "widths": ["[8,16]", "[32,64]"]}
    points = expand(study, parse_grid(["label_noise=0.0,0.1,0.2"]), seeds=2, sets={"dataset": "digits"})
    assert len(points) == 6 and len({p.run_id for p in points}) == 6
    assert [p.values for p in points[:2]] == [{"label_noise": 0.0, "seed": 0}, {"label_noise": 0.0, "seed": 1}]
    wide = expand(study, parse_grid(["widths=[8,16,32],[4,8,16]"]), sets={"dataset": "digits"})
    assert [p.config["widths"] for p in wide] == [[8, 16, 32], [4, 8, 16]]
    with pytest.raises(ConfigError, match="label_noise: 2.0 is out of range"):
        expand(study, parse_grid(["label_noise=0.1,2.0"]))
    with pytest.raises(ConfigError, match="--grid expects key=v1,v2"):
        parse_grid(["label_noise"])
    with pytest.raises(ConfigError, match="--seeds"):
        expand(study, {}, seeds=0)


def test_bad_grid_exits_2_and_writes_nothing(store_dir):
    out = run_cli("sweep", "double-descent", "--grid", "label_noise=0.1,7", store=store_dir)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "label_noise: 7.0 is out of range" in out.stderr and not store_dir.exists()
    out = run_cli("sweep", "double-descent", "--grid", "label_noise=0.1", "--backend", "slurm", store=store_dir)
    assert out.returncode == 2 and "choose one of: local, ray" in out.stderr


def test_local_sweep_skips_done_points_and_records_failures(store_dir):
    args = ["sweep", "double-descent", "--grid", "n_train=60,5000", "--seeds", "2", "--workers", "2", "--json", *TINY]
    first = run_cli(*args, store=store_dir, timeout=600)
    assert first.returncode == 1, first.stderr  # the n_train=5000 points cannot be drawn from digits
    doc = json.loads(first.stdout)
    by_n = {}
    for p in doc["points"]:
        by_n.setdefault(p["n_train"], []).append(p["status"])
    assert by_n == {60: ["done", "done"], 5000: ["failed", "failed"]} and doc["computed"] == 4
    failed = [r for r in _rows(store_dir) if r[2] == "failed"]
    assert len(failed) == 2
    assert all("exceeds" in json.loads((store_dir / "double-descent" / r[0] / "results.json").read_text())["error"]
               for r in failed)
    # a sweep page exists and the index links it
    assert (store_dir / "double-descent-sweep").is_dir() and "double-descent-sweep" in (store_dir / "index.html").read_text()
    second = json.loads(run_cli(*args, store=store_dir, timeout=600).stdout)
    assert second["computed"] == 0 and second["skipped"] == 4
    retried = json.loads(run_cli(*args, "--retry-failed", store=store_dir, timeout=600).stdout)
    assert retried["computed"] == 2
    # a point of the sweep is the same run as `overparam run` with that config
    single = json.loads(run_cli("run", "double-descent", *TINY[:2], "--set", "n_train=60", *TINY[4:], "--json",
                                "--seed", "1", store=store_dir).stdout)
    assert single["reused"] and single["run_id"] in {p["run_id"] for p in doc["points"]}


def test_sigkill_mid_sweep_loses_nothing_and_resumes(store_dir):
    args = [sys.executable, "-m", "overparam.cli", "--store", str(store_dir), "sweep", "double-descent",
            "--grid", "label_noise=0.0,0.1,0.2", "--seeds", "2", "--workers", "1", "--quiet", *TINY]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(r[2] == "done" for r in _rows(store_dir)) < 2:
        time.sleep(0.2)
    done_before = {r[0]: r[3] for r in _rows(store_dir) if r[2] == "done"}
    assert len(done_before) >= 2
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers die at once
    proc.wait(timeout=30)
    resumed = subprocess.run(args[:-len(TINY)] + TINY + ["--json"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["skipped"] >= len(done_before) and all(p["status"] == "done" for p in doc["points"])
    rows = [r for r in _rows(store_dir) if r[1] == "double-descent"]
    assert len(rows) == 6 and all(r[2] == "done" for r in rows)          # no lost, no duplicated point
    assert all(dict((r[0], r[3]) for r in rows)[k] == t for k, t in done_before.items())  # not recomputed


def test_ray_backend_matches_local_and_survives_a_killed_worker(tmp_path):
    pytest.importorskip("ray")
    grid = ["--grid", "label_noise=0.0,0.2", "--seeds", "1", "--workers", "2", "--json", *TINY]
    local = run_cli("sweep", "double-descent", *grid, store=tmp_path / "local", timeout=600)
    assert local.returncode == 0, local.stderr
    marker = tmp_path / "killed-once"
    ray_out = run_cli("sweep", "double-descent", *grid, "--backend", "ray", store=tmp_path / "ray", timeout=900,
                      env={"OVERPARAM_FAULT_KILL_ONCE": str(marker), "RAY_DEDUP_LOGS": "0"})
    assert ray_out.returncode == 0, ray_out.stderr[-3000:]
    assert marker.exists()  # one worker did die mid-task, and its task was retried
    a, b = json.loads(local.stdout), json.loads(ray_out.stdout)
    assert [p["run_id"] for p in a["points"]] == [p["run_id"] for p in b["points"]]
    for pa, pb in zip(a["points"], b["points"]):
        assert pb["status"] == "done"
        for key in ("test_error", "train_error"):
            assert pa["metrics"][key] == pytest.approx(pb["metrics"][key], abs=1e-6)
    rows = [r for r in _rows(tmp_path / "ray") if r[1] == "double-descent"]
    assert len(rows) == 2 and all(r[2] == "done" for r in rows)
