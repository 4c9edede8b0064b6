"""The CLI end to end, in subprocesses: outputs, reuse, one-line errors with exit 2, interruption."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_DD, run_cli


def _runs_in(store):
    db = store / "overparam.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT run_id, status FROM runs").fetchall()
    except sqlite3.OperationalError:  # the table is created a moment after the file
        return []
    finally:
        conn.close()


def test_studies_lists_the_registry():
    out = run_cli("studies", "--json")
    assert out.returncode == 0, out.stderr
    studies = {s["name"]: s for s in json.loads(out.stdout)}
    assert "double-descent" in studies and "Belkin" in studies["double-descent"]["paper"]
    keys = run_cli("studies", "--keys", "double-descent")
    assert keys.returncode == 0 and "label_noise" in keys.stdout


def test_run_json_then_reuse_then_force(store_dir):
    first = run_cli("run", "double-descent", *TINY_DD, "--json", store=store_dir)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert set(doc) >= {"run_id", "study", "status", "dir", "metrics", "checks"}
    assert doc["status"] == "done" and not doc["reused"] and len(doc["checks"]) >= 3
    run_dir = store_dir / "double-descent" / doc["run_id"]
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "results.json", "arrays.npz", "double_descent.png", "double_descent.svg",
            "report.html"} <= names
    assert (store_dir / "index.html").is_file()
    again = json.loads(run_cli("run", "double-descent", *TINY_DD, "--json", store=store_dir).stdout)
    assert again["run_id"] == doc["run_id"] and again["reused"]
    forced = json.loads(run_cli("run", "double-descent", *TINY_DD, "--json", "--force", store=store_dir).stdout)
    assert forced["run_id"] == doc["run_id"] and not forced["reused"]
    other_seed = json.loads(run_cli("run", "double-descent", *TINY_DD, "--seed", "1", "--json", store=store_dir).stdout)
    assert other_seed["run_id"] != doc["run_id"]
    listing = json.loads(run_cli("runs", "--json", store=store_dir).stdout)
    assert len(listing) == 2
    shown = json.loads(run_cli("show", doc["run_id"][:6], "--json", store=store_dir).stdout)
    assert shown["metrics"] == doc["metrics"]
    assert run_cli("report", store=store_dir).returncode == 0


def test_store_env_variable(tmp_path):
    store = tmp_path / "elsewhere"
    out = run_cli("run", "double-descent", *TINY_DD, "--json", env={"OVERPARAM_STORE": str(store)})
    assert out.returncode == 0, out.stderr
    assert (store / "overparam.db").is_file()


@pytest.mark.parametrize("args, needle", [
    (["run", "no-such-study"], "unknown study 'no-such-study'; choose one of:"),
    (["run", "double-descent", "--set", "bogus=1"], "unknown key 'bogus'"),
    (["run", "double-descent", "--set", "epochs=many"], "epochs: cannot read 'many' as int"),
    (["run", "double-descent", "--set", "label_noise=1.5"], "label_noise: 1.5 is out of range"),
    (["run", "double-descent", "--set", "widths=8,4,2"], "widths: must be strictly increasing"),
    (["run", "double-descent", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "double-descent", "--config", "/nonexistent/c.toml"], "config file not found"),
    (["run", "double-descent", "--set", "dataset=mnist", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
    (["run", "double-descent", "--seed", "-3"], "non-negative integer"),
    (["show", "ffffff"], "no run 'ffffff'"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_one_line_exit_2_nothing_written(store_dir, args, needle):
    out = run_cli(*args, store=store_dir)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert _runs_in(store_dir) == [] and not list(store_dir.glob("*/*")) if store_dir.exists() else True


def _wait_for_status(store, status, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _runs_in(store)
        if rows and rows[0][1] == status:
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"no run reached {status!r}: {_runs_in(store)}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_is_recorded_and_rerun_completes(store_dir, sig):
    # a few seconds of training: long enough to interrupt, short enough to rerun to completion
    slow = ["--set", "dataset=digits", "--set", "n_train=1000", "--set", "widths=4,8,16", "--set", "epochs=100",
            "--set", "optimizer=adam", "--set", "batch_size=64", "--set", "lr=0.001", "--quiet"]
    import os
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "overparam.cli", "--store", str(store_dir), "run",
                             "double-descent", *slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    run_id, _ = _wait_for_status(store_dir, "running")
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert _runs_in(store_dir) == [(run_id, "interrupted")]
    results = json.loads((store_dir / "double-descent" / run_id / "results.json").read_text())
    assert results["status"] == "interrupted" and "interrupted" in results["error"]
    assert "interrupted" in (store_dir / "index.html").read_text()
    again = run_cli("run", "double-descent", *slow, "--json", store=store_dir, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["run_id"] == run_id
    assert _runs_in(store_dir) == [(run_id, "done")]


def test_sigkill_leaves_run_interrupted_for_next_command(store_dir):
    import os
    slow = ["--set", "dataset=digits", "--set", "n_train=1000", "--set", "widths=4,8,16", "--set", "epochs=100000",
            "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "overparam.cli", "--store", str(store_dir), "run",
                             "double-descent", *slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    run_id, _ = _wait_for_status(store_dir, "running")
    proc.kill()
    proc.wait(timeout=30)
    listing = json.loads(run_cli("runs", "--json", store=store_dir).stdout)
    assert [(r["run_id"], r["status"]) for r in listing] == [(run_id, "interrupted")]
