"""Load test of `overparam ui` on the loopback address: a store of 10,000 synthetic runs, the requests a browser
makes, timed from the client side (one keep-alive connection; the server in its own process, as a user runs it).

The store's rows look like real ones: ten studies, a resolved config of 14 keys (lists among them), a dozen
metrics (curves of up to 40 values among them), three checks of the numeric shape, a few runs still running.
Only the table is populated (no run folders): these requests read the database, not the run files.

Each request is made once cold (the first with its parameters: the server has not yet cached the column
statistics of that filter) and then REPEAT times; the median, the 90th percentile and the cold time are printed.
"filtered, new query each time" changes the query's threshold at every request, so every one of them is cold:
that is what typing into the query box costs. The target (issue 19) is a median under 200 ms for the first
page and for a filtered query. Nothing is asserted.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchjson import write_result  # noqa: E402

from overparam.store import RunStore  # noqa: E402

RUNS, REPEAT = 10_000, 30
STUDIES = ["double-descent", "epoch-double-descent", "memorization", "hessian-spectrum", "batch-size",
           "lottery-ticket", "random-features", "ntk-spectrum", "am-capacity", "weight-decay-sparsity"]


def synthetic_rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    now = time.time() - n * 10
    for i in range(n):
        study = STUDIES[i % len(STUDIES)]
        noise = rng.choice([0.0, 0.05, 0.1, 0.15, 0.2, 0.3])
        widths = sorted(rng.sample([2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256], 7))
        config = {"seed": i % 5, "dataset": rng.choice(["mnist1d", "digits"]), "data_dir": "", "n_train": 4000,
                  "n_test": 1000, "label_noise": noise, "widths": widths, "depth": rng.choice([1, 2, 3]),
                  "optimizer": rng.choice(["sgd", "adam"]), "lr": rng.choice([0.001, 0.002, 0.01]),
                  "momentum": 0.9, "batch_size": rng.choice([100, 4000]), "epochs": rng.choice([200, 500, 1000]),
                  "repeats": 3}
        test_error = [round(0.4 + noise + rng.random() * 0.2, 4) for _ in widths]
        metrics = {"peak_width": widths[test_error.index(max(test_error))], "peak_test_error": max(test_error),
                   "threshold_width": widths[3], "threshold_params": 7434 + i, "test_error_smallest": test_error[0],
                   "test_error_largest": test_error[-1], "n_train": 4000, "widths": widths,
                   "train_error": [round(max(0.0, 0.5 - 0.1 * k), 4) for k in range(len(widths))],
                   "test_error": test_error, "loss_curve": [round(rng.random(), 4) for _ in range(40)],
                   "seconds_per_width": round(rng.random() * 10, 3)}
        checks = [{"name": f"check {k}", "passed": rng.random() < 0.8, "source": "Belkin et al. 2019 (PNAS), Fig. 1",
                   "expected": "> 0.5", "measured": f"{rng.random():.3f}", "sentence": f"check {k}: measured",
                   "comparison": ">", "measured_value": rng.random(), "expected_value": 0.5, "unit": "",
                   "tolerance": 0.0, "valid": True} for k in range(3)]
        status = "running" if i >= n - 5 else rng.choices(["done", "failed", "diverged", "interrupted"],
                                                          [90, 4, 3, 3])[0]
        started = now + 10 * i
        yield (f"{i:012x}", study, status, json.dumps(config), json.dumps(metrics if status == "done" else {}),
               json.dumps(checks if status == "done" else []), "[]", "", None, started, started,
               None if status == "running" else started + rng.random() * 60,
               os.getpid() if status == "running" else None, os.uname().nodename, "quick", "abc")


def make_store(root: Path) -> None:
    store = RunStore(root)
    conn = store.conn
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO runs (run_id, study, status, config, metrics, checks, figures, notes, error, "
                     "created, started, finished, pid, host, preset, code) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", synthetic_rows(RUNS))
    conn.execute("COMMIT")
    store.close()


def start_server(root: Path) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "overparam.cli", "--store", str(root), "ui", "--port", "0"],
                            env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))


def timed(conn: http.client.HTTPConnection, path: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    return time.perf_counter() - t0, response.status, len(body)


def main() -> int:
    q = urllib.parse.quote
    filtered = "config.label_noise = 0.15 and metrics.peak_test_error > 0.5"
    requests = [
        ("first page (full HTML page)", "/"),
        ("first page (table fragment)", "/fragment/runs"),
        ("first page (JSON)", "/api/runs"),
        ("filtered query (fragment)", "/fragment/runs?query=" + q(filtered)),
        ("filtered + study + sorted on a metric", "/fragment/runs?study=double-descent&sort=metrics.peak_test_error"
                                                  "&dir=asc&query=" + q(filtered)),
        ("sorted on a metric, page 100", "/fragment/runs?sort=metrics.peak_test_error&page=100"),
        ("free-text search", "/fragment/runs?search=adam"),
        ("live poll (/api/live)", "/api/live"),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        t0 = time.perf_counter()
        make_store(root)
        print(f"store of {RUNS} runs written in {time.perf_counter() - t0:.1f} s "
              f"({(root / 'overparam.db').stat().st_size / 1e6:.1f} MB)")
        proc, port = start_server(root)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for name, path in requests:
                cold, status, size = timed(conn, path)
                assert status == 200, (path, status)
                times = [timed(conn, path)[0] for _ in range(REPEAT)]
                rows.append({"request": name, "path": path, "cold_ms": 1e3 * cold,
                             "median_ms": 1e3 * statistics.median(times),
                             "p90_ms": 1e3 * statistics.quantiles(times, n=10)[-1], "bytes": size})
            times = []
            for k in range(REPEAT):   # every request a query not seen before: its column statistics are cold
                query = q(f"config.label_noise = 0.15 and metrics.peak_test_error > {0.4 + k / 1000:.3f}")
                times.append(timed(conn, "/fragment/runs?query=" + query)[0])
            rows.append({"request": "filtered, a new query each time", "path": "/fragment/runs?query=...",
                         "cold_ms": 1e3 * times[0], "median_ms": 1e3 * statistics.median(times),
                         "p90_ms": 1e3 * statistics.quantiles(times, n=10)[-1], "bytes": None})
            conn.close()
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\n{RUNS} runs, {REPEAT} requests each over one keep-alive connection to 127.0.0.1 (load average "
          f"{os.getloadavg()[0]:.2f})")
    print(f"{'request':<40} {'median':>9} {'p90':>9} {'cold':>9} {'bytes':>9}")
    for r in rows:
        print(f"{r['request']:<40} {r['median_ms']:7.1f}ms {r['p90_ms']:7.1f}ms {r['cold_ms']:7.1f}ms "
              f"{r['bytes'] if r['bytes'] is not None else '':>9}")
    write_result("ui", rows, notes=f"{RUNS} synthetic runs; target: median < 200 ms for the first page and a "
                                    f"filtered query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
