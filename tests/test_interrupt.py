"""Signals and kills: work stops between steps, nothing finished is lost, no worker outlives its parent.

The subprocess tests send the signal to the main process only (what `kill`, `timeout`, `docker stop` and job
schedulers do), never to the process group. Every wait has a generous bound that is far below the time the
interrupted work would take to finish by itself: the bound tells "stopped on the signal" from "ran to its
end", it does not measure speed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT

from overparam.train.parallel import run_jobs
from overparam.train.stop import Interrupted, cancelled_by, check_stop, clear_stop, deferred, request_stop

# double-descent on MNIST-1D with four widths and 5000 epochs: minutes of work, in worker processes
# (train_mlp_widths chooses processes for work this long), so a stop on the signal is unmistakable.
LONG_DD = ["--set", "epochs=5000", "--set", "widths=8,16,32,64", "--set", "n_train=1000", "--quiet"]
SHORT_DD = ["--set", "dataset=digits", "--set", "n_train=200", "--set", "n_test=100", "--set", "widths=2,8,32",
            "--set", "epochs=20", "--set", "optimizer=adam", "--set", "batch_size=200", "--quiet"]
STOPPED_WITHIN = 30.0   # seconds; the interrupted work would take minutes


# -- helpers ---------------------------------------------------------------------------------------

def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                parents[int(entry.name)] = parent
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float, what: str, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_cli(store: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen([sys.executable, "-m", "overparam.cli", "--store", str(store), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def rows(store: Path) -> dict[str, str]:
    conn = sqlite3.connect(store / "overparam.db", timeout=30)
    try:
        return dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
    finally:
        conn.close()


def progress_files(store: Path) -> list[Path]:
    return [p for p in store.glob("*/*/progress.json")] + [p for p in store.glob("*/.*/progress.json")]


def working(proc: subprocess.Popen, store: Path, children: int = 0):
    """True once the run reports progress (and has at least ``children`` worker processes)."""
    if proc.poll() is not None:
        raise AssertionError(f"the command ended early: {proc.communicate()}")
    started = bool(progress_files(store))   # the run has begun reporting (its first bar is open)
    workers = [p for p in descendants(proc.pid) if "spawn_main" in _cmdline(p)]
    return started and len(workers) >= children


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- in-process: the stop flag, deferred sections, pools ------------------------------------------------

@pytest.fixture(autouse=True)
def _fresh_flag():
    clear_stop()
    yield
    clear_stop()


def test_check_stop_raises_only_after_a_request():
    check_stop()
    request_stop()
    with pytest.raises(Interrupted):
        check_stop()


def test_deferred_section_finishes_then_raises_a_stop_requested_inside_it():
    done = []
    with pytest.raises(Interrupted):
        with deferred():
            request_stop()
            check_stop()          # does not raise inside the section
            done.append("written")
    assert done == ["written"]


def test_deferred_section_while_winding_down_does_not_raise_again():
    request_stop()
    with deferred():
        pass                      # recording "interrupted" after the stop: no second Interrupted


def test_pool_cancels_the_other_jobs_when_one_fails():
    started, finished = threading.Event(), []

    def slow():
        started.set()
        for _ in range(2000):     # 20 s if nothing stopped it
            check_stop()
            time.sleep(0.01)
        finished.append("slow")

    def failing():
        started.wait(10)
        raise ValueError("boom")

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="boom"):
        run_jobs([slow, failing], workers=2)
    wait_until(lambda: not any(t.name.startswith("overparam") for t in threading.enumerate()), 10,
               "the pool's threads to end")
    assert finished == [] and time.monotonic() - t0 < 15
    check_stop()                  # the failure cancelled the pool only, not the process


def test_cancel_event_stops_work_in_this_thread_only():
    event = threading.Event()
    event.set()
    with cancelled_by(event):
        with pytest.raises(Interrupted):
            check_stop()
    check_stop()


# -- subprocesses: signals and kills ---------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_main_process_stops_run_and_its_workers(tmp_path, sig):
    store = tmp_path / "runs"
    proc = start_cli(store, "run", "double-descent", *LONG_DD)
    wait_until(lambda: working(proc, store, children=1), 240, "training in worker processes")
    family = descendants(proc.pid)
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=STOPPED_WITHIN)
    assert time.monotonic() - t0 < STOPPED_WITHIN
    assert proc.returncode == 130, err
    assert "recorded as interrupted" in err and err.count("\n") == 1
    wait_until(lambda: not any(alive(p) for p in family), 10, "the workers to end")
    assert list(rows(store).values()) == ["interrupted"]


def test_sigkill_of_a_run_leaves_no_orphan_and_the_run_reads_interrupted(tmp_path):
    store = tmp_path / "runs"
    proc = start_cli(store, "run", "double-descent", *LONG_DD)
    wait_until(lambda: working(proc, store, children=1), 240, "training in worker processes")
    family = descendants(proc.pid)
    assert family
    proc.kill()
    proc.wait()
    wait_until(lambda: not any(alive(p) for p in family), 10, "orphaned workers to end")
    listing = subprocess.run([sys.executable, "-m", "overparam.cli", "runs", "--json", "--store", str(store)],
                             capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    (run,) = json.loads(listing.stdout)
    assert run["status"] == "interrupted"
    assert run["seconds"] is not None and run["seconds"] < 300  # until it was last seen, not until noticed


def test_interrupted_force_keeps_the_finished_run(tmp_path):
    store = tmp_path / "runs"
    first = subprocess.run([sys.executable, "-m", "overparam.cli", "--store", str(store), "run", "double-descent",
                            *LONG_DD[:-1], "--set", "epochs=40", "--json"], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert first.returncode == 0, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    folder = store / "double-descent" / run_id
    before = snapshot(folder)
    assert "report.html" in before and "arrays.npz" in before
    proc = start_cli(store, "run", "double-descent", *LONG_DD[:-1], "--set", "epochs=40", "--quiet", "--force")
    wait_until(lambda: any(p.parent.name.startswith(f".{run_id}.attempt") for p in progress_files(store)),
               120, "the new attempt to start")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=STOPPED_WITHIN)
    assert proc.returncode == 130 and "is kept as it was" in err
    assert snapshot(folder) == before
    assert rows(store) == {run_id: "done"}
    assert not list((store / "double-descent").glob(".*"))  # the attempt's folder is gone


def test_finished_force_replaces_the_run_whole(tmp_path):
    store = tmp_path / "runs"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "overparam.cli", "--store", str(store), "run", "double-descent", *SHORT_DD, "--json"]
    run_id = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env).stdout)["run_id"]
    folder = store / "double-descent" / run_id
    (folder / "stray.txt").write_text("left by hand")
    again = subprocess.run(cmd + ["--force"], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert not (folder / "stray.txt").exists()          # the new attempt's folder replaced the old one
    assert json.loads((folder / "results.json").read_text())["status"] == "done"
    assert json.loads((folder / "config.json").read_text())["preset"] == "quick"


SWEEP = ["sweep", "double-descent", "--grid", "epochs=10,5000", "--set", "widths=8,16,32", "--set", "n_train=1000",
         "--workers", "2", "--quiet"]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopped_sweep_keeps_finished_points_and_leaves_no_orphan(tmp_path, how):
    store = tmp_path / "runs"
    proc = start_cli(store, *SWEEP)

    def short_point_done():
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        return (store / "overparam.db").exists() and "done" in rows(store).values()

    wait_until(short_point_done, 180, "the short point to finish")
    wait_until(lambda: working(proc, store, children=1), 180, "the long point to train")
    family = descendants(proc.pid)
    if how == "SIGKILL":
        proc.kill()
        proc.wait()
    else:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=STOPPED_WITHIN)
        assert proc.returncode == 130, err
    wait_until(lambda: not any(alive(p) for p in family), 10, "the sweep's workers to end")
    listing = subprocess.run([sys.executable, "-m", "overparam.cli", "runs", "--json", "--store", str(store)],
                             capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    statuses = sorted(r["status"] for r in json.loads(listing.stdout))
    assert statuses == ["done", "interrupted"]


def test_sigkill_of_a_ray_sweep_leaves_no_ray_process(tmp_path):
    pytest.importorskip("ray")
    store = tmp_path / "runs"
    proc = start_cli(store, "sweep", "double-descent", "--backend", "ray", "--grid", "epochs=3000,3001",
                     "--set", "widths=8,16,32", "--set", "n_train=1000", "--workers", "2", "--quiet")
    wait_until(lambda: proc.poll() is None and any(json.loads(p.read_text() or "{}").get("step", 0) > 0
                                                   for p in progress_files(store) if p.stat().st_size),
               240, "the Ray tasks to train")
    family = descendants(proc.pid)
    assert len(family) >= 3  # the cluster's processes and the reaper
    proc.kill()
    proc.wait()
    wait_until(lambda: not any(alive(p) for p in family), 20, "the local Ray cluster's processes to end")
