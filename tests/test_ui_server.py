"""The explorer's server over a real socket: the runs table (filters, sort, pages), groups over seeds against
numpy, arrays against the npz, live progress, start validation against the CLI's own error lines, cancel, a
killed run shown as interrupted, a run started from the explorer outliving it, and safety (escaping, path
traversal, malformed requests, host check, token, same-origin POSTs).

One server for the module, on a small store made here; each request goes through uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from test_interrupt import wait_until

from overparam.store import RunStore, figure_bytes, save_arrays, save_figure
from overparam.store.runs import PROGRESS_FILE

# am-in-networks at this size trains 60,000 small steps (minutes) and reports each one: long enough to
# watch and to stop, far too long to end by itself during a test.
LONG_RUN = ["am-in-networks", "--set", "widths=8,16,32", "--set", "epochs=10000", "--set", "n_train=50",
            "--set", "n_test=50", "--set", "batch_size=50"]
LONG_SETS = ["widths=8,16,32", "epochs=10000", "n_train=50", "n_test=50", "batch_size=50"]
WAIT = 60.0   # seconds: a bound far above what each awaited event takes, to tell "happened" from "never happens"
XSS = "<script>alert(1)</script>"
NOISES = (0.0, 0.1, 0.2)


# -- a small store ------------------------------------------------------------------------------------------------

def _png() -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1, 2], [0.5, 0.7, 0.4])
    rendered = figure_bytes(fig)
    plt.close(fig)
    return rendered


def peak_error(noise: float, seed: int) -> float:
    return round(0.3 + noise + 0.01 * seed * seed, 6)


def make_store(root: Path) -> dict[str, str]:
    """Nine finished 'toy' runs (label_noise x seed) with arrays, checks of both shapes and a figure; a failed run
    whose error and config hold markup; an interrupted run; a stored sweep over the nine. Returns name -> id."""
    store = RunStore(root)
    figure = _png()
    ids: dict[str, str] = {}
    widths = np.array([2, 4, 8, 16, 32])
    for noise in NOISES:
        for seed in range(3):
            run_id = f"toy{int(noise * 10)}s{seed}aaaa"
            config = {"seed": seed, "label_noise": noise, "widths": widths.tolist(), "dataset": "digits"}
            rec = store.begin(run_id, "toy", config, preset="quick")
            test_error = 0.5 + noise * np.sin(widths / 8.0) + 0.01 * seed
            save_arrays(rec.dir / "arrays.npz", {
                "widths": widths, "test_error": test_error, "history": np.arange(12.0).reshape(3, 4) + seed,
                "big": np.zeros((300, 300)), "with_nan": np.array([1.0, np.nan, 3.0])})
            files = save_figure(rec.dir, "curve", figure)
            checks = [{"name": "peak at threshold", "passed": seed != 2, "source": "Belkin 2019", "expected": "within 1",
                       "measured": f"{seed} steps"},
                      {"name": "numeric check", "passed": False, "source": "Nakkiran 2019", "expected": "> 0.5",
                       "measured": "0.4 (not measurable: no peak)", "sentence": "numeric check: measured 0.4",
                       "comparison": ">", "measured_value": 0.4, "expected_value": 0.5, "unit": "",
                       "tolerance": 0.0, "valid": False}]
            store.finish(run_id, "done", {"peak_test_error": peak_error(noise, seed), "n_widths": 5,
                                          "test_error": test_error.tolist()}, checks, files, notes="toy notes")
            ids[f"{noise}-{seed}"] = run_id
    bad = store.begin("bad0000000001", "toy", {"seed": 9, "label_noise": 0.5, "dataset": XSS})
    store.finish(bad.run_id, "failed", error=f"ValueError: {XSS}\ntraceback line")
    ids["failed"] = bad.run_id
    cut = store.begin("cut0000000001", "other", {"seed": 0})
    store.finish(cut.run_id, "interrupted", error="interrupted")
    ids["interrupted"] = cut.run_id
    sweep_ids = [ids[f"{n}-{s}"] for n in NOISES for s in range(3)]
    sweep = store.begin("sweep0000001", "toy-sweep", {"study": "toy", "grid": ["label_noise"], "run_ids": sweep_ids})
    store.finish(sweep.run_id, "done", {"points": 9, "grid": ["label_noise"], "table": []})
    ids["sweep"] = sweep.run_id
    store.close()
    return ids


# -- a server in a thread --------------------------------------------------------------------------------------------

class ServerThread:
    def __init__(self, root: Path, token: str | None = None, loopback: bool = True):
        import uvicorn

        from overparam.ui import bind
        from overparam.ui.server import create_app

        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.app = create_app(root, token=token, loopback=loopback)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        end = time.monotonic() + WAIT
        while not self.server.started and time.monotonic() < end:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(WAIT)
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def fetch(port: int, path: str, method: str = "GET", body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One raw request (the path is sent exactly as given, traversal attempts included)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def get_json(port: int, path: str) -> dict:
    status, _, text = fetch(port, path)
    assert status == 200, (path, status, text)
    return json.loads(text)


def post_json(port: int, path: str, payload, origin: bool = True) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"Origin": f"http://127.0.0.1:{port}"} if origin else {})
    status, _, text = fetch(port, path, "POST", json.dumps(payload).encode(), headers)
    return status, json.loads(text)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui") / "runs"
    ids = make_store(root)
    with ServerThread(root) as server:
        yield server, root, ids


# -- the runs table ---------------------------------------------------------------------------------------------

def test_runs_api_filters_sorts_and_pages(explorer):
    server, root, ids = explorer
    q = urllib.parse.quote
    page = get_json(server.port, "/api/runs?query=" + q("config.label_noise = 0.1 and metrics.peak_test_error > 0.4"))
    assert {r["run_id"] for r in page["rows"]} == {ids["0.1-1"], ids["0.1-2"]} and page["total"] == 2
    # sorted on a metric, ascending: the order numpy gives
    page = get_json(server.port, "/api/runs?study=toy&status=done&sort=metrics.peak_test_error&dir=asc&size=50")
    expected = sorted(((peak_error(n, s), ids[f"{n}-{s}"]) for n in NOISES for s in range(3)))
    assert [r["run_id"] for r in page["rows"]] == [run_id for _, run_id in expected]
    column = page["columns"].index("metrics.peak_test_error")
    assert [r["cells"][column] for r in page["rows"]] == [v for v, _ in expected]
    # pages of 4: the second page is the next four of the same order, and the pages cover the runs once
    pages = [get_json(server.port, f"/api/runs?study=toy&status=done&sort=metrics.peak_test_error&dir=asc&size=4"
                      f"&page={p}") for p in (1, 2, 3)]
    assert [r["run_id"] for p in pages for r in p["rows"]] == [run_id for _, run_id in expected]
    assert pages[0]["pages"] == 3 and len(pages[2]["rows"]) == 1
    # automatic columns: config keys that vary and the numeric metrics; constant keys (dataset here) left out
    assert "config.label_noise" in page["columns"] and "config.seed" in page["columns"]
    assert "config.dataset" not in page["columns"] and "metrics.n_widths" in page["columns"]
    # checks passed counted in SQL, from both check shapes
    by_id = {r["run_id"]: r for r in page["rows"]}
    assert by_id[ids["0.0-0"]]["n_passed"] == 1 and by_id[ids["0.0-2"]]["n_passed"] == 0
    assert by_id[ids["0.0-0"]]["n_checks"] == 2


def test_search_status_study_and_selected_ids(explorer):
    server, _, ids = explorer
    assert [r["run_id"] for r in get_json(server.port, "/api/runs?search=ALERT")["rows"]] == [ids["failed"]]
    assert [r["run_id"] for r in get_json(server.port, "/api/runs?status=interrupted")["rows"]] == [ids["interrupted"]]
    assert get_json(server.port, "/api/runs?study=toy")["total"] == 10
    chosen = f"{ids['0.0-0']},{ids['sweep']}"
    assert {r["run_id"] for r in get_json(server.port, f"/api/runs?ids={chosen}")["rows"]} == set(chosen.split(","))


def test_table_fragment_and_page_render_the_same_rows(explorer):
    server, _, ids = explorer
    status, _, fragment = fetch(server.port, "/fragment/runs?query=config.label_noise%20%3D%200.2")
    assert status == 200 and fragment.count('<tr data-run="') == 3 and ids["0.2-0"] in fragment
    status, _, page = fetch(server.port, "/?query=config.label_noise%20%3D%200.2")
    assert status == 200 and page.count('<tr data-run="') == 3
    # the shared macro's cells: the run's link, its status and its verdict
    assert f'href="/run/{ids["0.2-0"]}"' in page and "1/2 checks passed" in page


def test_bad_query_gets_a_400_with_one_line(explorer):
    server, _, _ = explorer
    for path in ("/api/runs", "/fragment/runs"):
        status, _, text = fetch(server.port, path + "?query=config.x%20%3E")
        assert status == 400
        error = json.loads(text)["error"]
        assert error.startswith("query: expected a value") and "\n" not in error
    status, _, page = fetch(server.port, "/?query=config.x%20%3E")
    assert status == 400 and "query: expected a value" in page and "Traceback" not in page


@pytest.mark.parametrize("method, path, body, headers, expected", [
    ("GET", "/api/runs?page=abc", None, {}, "page: expected a whole number, got 'abc'"),
    ("GET", "/api/runs?page=0", None, {}, "page: 0 is out of range"),
    ("GET", "/api/runs?size=100000", None, {}, "size: 100000 is out of range; allowed 1 <= size <= 500"),
    ("GET", "/api/runs?dir=up", None, {}, "dir: 'up' is not allowed; choose asc or desc"),
    ("GET", "/api/runs?sort=rowid", None, {}, "unknown field 'rowid'"),
    ("GET", "/api/runs?cols=config.a,bogus", None, {}, "unknown field 'bogus'"),
    ("GET", "/api/runs?status=running-ish", None, {}, "status: 'running-ish' is not one of running, done"),
    ("GET", "/api/runs?ids=..%2F..%2Fetc", None, {}, "ids: '../../etc' is not a run id"),
    ("GET", "/api/runs/no-such-run", None, {}, "no run 'no-such-run'"),
    ("GET", "/api/runs/%3Cscript%3E/arrays", None, {}, "is not a run id"),
    ("GET", "/compare?ids=abc", None, {}, "compare: choose at least two runs"),
    ("GET", "/compare?ids=" + ",".join(f"r{i}" for i in range(9)), None, {}, "at most 8 runs"),
    ("GET", "/api/groups?metric=metrics.x", None, {}, "study: choose a study"),
    ("GET", "/api/groups?study=toy&key=config.label_noise", None, {}, "metric: choose a metric"),
    ("GET", "/api/groups?study=toy&key=config.x&metric=metrics.y&sweep=nope", None, {}, "sweep: no stored sweep"),
    ("GET", "/api/studies/no-such-study", None, {}, "unknown study 'no-such-study'"),
    ("GET", "/no/such/page", None, {}, "Not Found"),
    ("POST", "/api/start", b"{not json", {"Content-Type": "application/json"}, "request body is not valid JSON"),
    ("POST", "/api/start", b"[1, 2]", {"Content-Type": "application/json"}, "expected a JSON object"),
    ("POST", "/api/start", b"{}", {"Content-Type": "text/plain"}, "a POST must send application/json"),
    ("POST", "/api/start", b'{"study": "x"}', {"Content-Type": "application/json", "Origin": "http://evil.example"},
     "a POST must come from the explorer's own pages"),
    ("POST", "/api/start", b'{"study": "x"}', {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
     "a POST must come from the explorer's own pages"),
    ("PUT", "/api/start", b"{}", {"Content-Type": "application/json"}, "method PUT is not allowed"),
    ("POST", "/api/runs/abc/cancel", b"{}", {"Content-Type": "application/json"}, "no run 'abc'"),
])
def test_malformed_requests_get_a_4xx_with_a_message(explorer, method, path, body, headers, expected):
    server, _, _ = explorer
    status, _, text = fetch(server.port, path, method, body, headers)
    assert 400 <= status < 500, (status, text)
    assert expected in text and "Traceback" not in text and 'File "' not in text


def test_no_file_outside_the_store_is_served(explorer, tmp_path):
    server, root, ids = explorer
    run_id = ids["0.0-0"]
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-OUTSIDE-THE-STORE")
    # a figure name recorded in the store that is a link to a file outside it
    rec_dir = root / "toy" / run_id
    (rec_dir / "evil.png").symlink_to(secret)
    store = RunStore(root)
    rec = store.get(run_id)
    store.finish(run_id, rec.status, rec.metrics, rec.checks, rec.figures + ["evil.png"], rec.notes)
    store.close()
    attempts = [
        f"/files/toy/{run_id}/evil.png",
        f"/files/toy/{run_id}/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"/files/toy/{run_id}/../../overparam.db",
        f"/files/toy/{run_id}/%2e%2e/%2e%2e/overparam.db",
        "/files/toy/..%2F..%2Fother/passwd",
        f"/files/..%2F..%2F..%2Fetc/{run_id}/passwd",
        f"/files/other/{run_id}/config.json",                 # the run is not of that study
        f"/files/toy/{run_id}/progress.json",                 # a file the run does not list
        f"/files/toy/{run_id}/overparam.db",
        "/files/toy/%2E%2E/overparam.db/x",
        "/static/../server.py",
        "/static/..%2F..%2Fui%2Fserver.py",
        "/static/%2e%2e/%2e%2e/%2e%2e/store/runs.py",
        "/static/vendor/../../../../../../etc/passwd",
        "/static//etc/passwd",
    ]
    for path in attempts:
        status, _, text = fetch(server.port, path)
        assert status in (400, 404), (path, status)
        assert "SECRET-OUTSIDE" not in text and "root:" not in text and "SQLite" not in text, path
    status, _, text = fetch(server.port, f"/files/toy/{run_id}/config.json")
    assert status == 200 and json.loads(text)["label_noise"] == 0.0
    status, headers, _ = fetch(server.port, f"/files/toy/{run_id}/curve.png")
    assert status == 200 and headers["content-type"] == "image/png"


def test_user_strings_are_escaped_everywhere(explorer):
    server, _, ids = explorer
    pages = [f"/run/{ids['failed']}", "/?search=alert", f"/compare?ids={ids['failed']},{ids['0.0-0']}",
             "/fragment/runs?status=failed", "/?query=study%20%3D%20%27%3Cb%3Ex%3C%2Fb%3E%27", "/sweeps?study=toy"]
    for path in pages:
        status, _, html = fetch(server.port, path)
        assert status == 200, path
        assert XSS not in html and "<b>x</b>" not in html, path
    _, _, html = fetch(server.port, f"/run/{ids['failed']}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    status, _, html = fetch(server.port, "/no-such-page-%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert status == 404 and "<script>alert" not in html


def test_pages_load_nothing_from_elsewhere(explorer):
    server, _, ids = explorer
    for path in ("/", f"/run/{ids['0.0-0']}", f"/compare?ids={ids['0.0-0']},{ids['0.1-0']}", "/sweeps", "/start"):
        status, headers, html = fetch(server.port, path)
        assert status == 200
        assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
        sources = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert sources and all(s.startswith(("/", "#", "data:")) for s in sources), (path, sources)
    static = Path(__file__).resolve().parents[1] / "src" / "overparam" / "ui" / "static"
    for path in static.rglob("*"):
        if path.suffix in (".js", ".css", ".html"):
            text = path.read_text()
            assert not re.search(r"""(?:import|src=|href=|url\()\s*["']?https?://""", text), path


def test_host_header_must_name_the_loopback_address(explorer):
    server, _, _ = explorer
    status, _, text = fetch(server.port, "/", headers={"Host": "evil.example:80"})
    assert status == 400 and "is not served" in text
    assert fetch(server.port, "/api/live", headers={"Host": f"localhost:{server.port}"})[0] == 200


def test_a_token_guards_every_request(explorer):
    _, root, _ = explorer
    with ServerThread(root, token="sesame-0123456789", loopback=False) as server:
        for path in ("/", "/api/runs", "/static/common.js"):
            status, _, text = fetch(server.port, path)
            assert status == 401 and "needs its token" in text
        assert fetch(server.port, "/", headers={"Authorization": "Bearer wrong-token-xx"})[0] == 401
        status, headers, _ = fetch(server.port, "/?token=sesame-0123456789&study=toy")
        assert status == 303 and headers["location"] == "/?study=toy"
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
        assert fetch(server.port, "/api/runs", headers={"Cookie": cookie})[0] == 200
        assert fetch(server.port, "/api/runs", headers={"Authorization": "Bearer sesame-0123456789"})[0] == 200
        # not bound to loopback: any Host header, but never without the token
        assert fetch(server.port, "/api/live", headers={"Host": "box.lan:8765", "Cookie": cookie})[0] == 200


def test_binding_elsewhere_needs_a_token():
    from overparam.ui import ServeError, access_token, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("box.lan")
    assert access_token("127.0.0.1", None) is None
    generated = access_token("0.0.0.0", None)
    assert generated and len(generated) >= 24 and access_token("0.0.0.0", None) != generated
    assert access_token("0.0.0.0", "given-token") == "given-token"
    with pytest.raises(ServeError, match="at least 8 characters"):
        access_token("0.0.0.0", "short")


def test_ui_command_bad_settings_are_one_line_exit_2(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        out = run_cli("ui", "--port", str(busy.getsockname()[1]), store=tmp_path / "runs")
        assert out.returncode == 2 and out.stderr.startswith("overparam: error: cannot listen on 127.0.0.1:")
        assert len(out.stderr.strip().splitlines()) == 1
    finally:
        busy.close()
    out = run_cli("ui", "--host", "0.0.0.0", "--token", "abc", store=tmp_path / "runs")
    assert out.returncode == 2 and out.stderr.strip() == "overparam: error: --token must be at least 8 characters long"


# -- run pages, arrays, groups -----------------------------------------------------------------------------------

def test_run_page_shows_checks_of_both_shapes_figures_config_metrics_notes(explorer):
    server, _, ids = explorer
    status, _, html = fetch(server.port, f"/run/{ids['0.0-0']}")
    assert status == 200
    assert "peak at threshold" in html and "Belkin 2019" in html and ">pass<" in html
    assert "numeric check" in html and ">not measurable<" in html and 'title="numeric check: measured 0.4"' in html
    assert f'src="/files/toy/{ids["0.0-0"]}/curve.png"' in html and "toy notes" in html
    assert "label_noise" in html and "peak_test_error" in html
    status, _, html = fetch(server.port, f"/run/{ids['failed']}")
    assert 'class="error"' in html and "traceback line" in html


def test_arrays_api_matches_the_npz(explorer):
    server, root, ids = explorer
    reply = get_json(server.port, f"/api/runs/{ids['0.1-2']}/arrays")
    arrays = {a["name"]: a for a in reply["arrays"]}
    with np.load(root / "toy" / ids["0.1-2"] / "arrays.npz") as z:
        assert arrays["test_error"]["series"] == [z["test_error"].tolist()]
        assert arrays["history"]["layout"] == "rows" and arrays["history"]["series"] == z["history"].tolist()
    assert arrays["with_nan"]["series"] == [[1.0, None, 3.0]]
    assert arrays["big"]["series"] is None and "too many" in arrays["big"]["why"]


def test_series_of_arrays_of_every_shape():
    from overparam.ui.arrays import series_of

    tall = np.arange(200.0).reshape(100, 2)          # (steps, replicas): one series per column
    assert series_of("h", tall)["layout"] == "columns" and series_of("h", tall)["series"] == tall.T.tolist()
    assert series_of("b", np.array([True, False]))["series"] == [[1.0, 0.0]]
    assert series_of("s", np.array(["a", "b"]))["series"] is None
    assert series_of("c", np.zeros((2, 2, 2)))["why"] == "3-dimensional"
    assert series_of("i", np.array([1, -2]))["series"] == [[1.0, -2.0]]
    assert series_of("z", np.float64(3.0))["why"] == "a single number"
    assert series_of("m", np.zeros((100, 100)))["why"] == "a 100x100 matrix: too many series to plot"


def test_groups_over_seeds_match_numpy(explorer):
    server, _, ids = explorer
    reply = get_json(server.port, "/api/groups?study=toy&key=config.label_noise&metric=metrics.peak_test_error")
    groups = reply["groups"]
    assert [g["x"] for g in groups] == list(NOISES)
    for g in groups:
        values = np.array([peak_error(g["x"], s) for s in range(3)])
        assert g["n"] == 3 and g["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert g["sem"] == pytest.approx(values.std(ddof=1) / np.sqrt(3), rel=1e-9)
        assert g["min"] == values.min() and g["max"] == values.max()
        assert set(g["run_ids"]) == {ids[f"{g['x']}-{s}"] for s in range(3)}
    # split by seed: one group per (noise, seed) pair, each of one run with no standard error
    split = get_json(server.port, "/api/groups?study=toy&key=config.label_noise&metric=metrics.peak_test_error"
                                  "&split=config.seed")["groups"]
    assert len(split) == 9 and all(g["n"] == 1 and g["sem"] is None for g in split)
    # a stored sweep restricts the groups to its points; a query restricts further
    only = get_json(server.port, "/api/groups?study=toy&key=config.label_noise&metric=metrics.peak_test_error"
                                 f"&sweep={ids['sweep']}&query=config.seed%20%3C%202")["groups"]
    assert [g["n"] for g in only] == [2, 2, 2]


def test_points_for_parallel_coordinates(explorer):
    server, _, ids = explorer
    reply = get_json(server.port, "/api/points?study=toy&keys=config.label_noise,config.seed"
                                  "&metric=metrics.peak_test_error")
    points = {p["run_id"]: p for p in reply["points"]}
    assert len(points) == 9   # the failed run has no metric
    assert points[ids["0.2-1"]]["values"] == [0.2, 1] and points[ids["0.2-1"]]["metric"] == peak_error(0.2, 1)


def test_sweeps_page_preselects_a_stored_sweeps_key(explorer):
    server, _, ids = explorer
    status, _, html = fetch(server.port, f"/sweeps?study=toy&sweep={ids['sweep']}")
    assert status == 200 and '<option value="config.label_noise" selected>' in html
    assert '<option value="metrics.peak_test_error" selected>' in html
    _, _, run_html = fetch(server.port, f"/run/{ids['sweep']}")
    assert f"/sweeps?study=toy&amp;sweep={ids['sweep']}&amp;key=config.label_noise" in run_html


def test_compare_marks_the_keys_that_differ(explorer):
    server, _, ids = explorer
    status, _, html = fetch(server.port, f"/compare?ids={ids['0.0-0']},{ids['0.2-0']}")
    assert status == 200
    rows = {key: kind for kind, key in re.findall(r'<tr class="(differs|same)"><th>([^<]+)</th>', html)}
    assert rows["label_noise"] == "differs" and rows["seed"] == "same" and rows["dataset"] == "same"
    assert rows["peak_test_error"] == "differs" and rows["n_widths"] == "same"


# -- live, start, cancel --------------------------------------------------------------------------------------------

def test_live_progress_of_a_running_run_and_of_a_forced_rerun(explorer):
    server, root, ids = explorer
    store = RunStore(root)
    rec = store.begin("live00000001", "toy", {"seed": 0, "label_noise": 0.3})   # this process: alive
    now = time.time()
    (rec.dir / PROGRESS_FILE).write_text(json.dumps({
        "desc": "ensemble", "step": 120, "total": 500, "bar": 2, "elapsed": 3.0, "eta": 9.5, "updated": now,
        "started": now - 5, "pid": os.getpid(), "metrics": {"loss": 0.41}}))
    attempt = root / "toy" / f".{ids['0.0-1']}.attempt-{os.getpid()}"
    attempt.mkdir()
    (attempt / PROGRESS_FILE).write_text(json.dumps({"desc": "again", "step": 3, "total": 10, "bar": 1,
                                                     "elapsed": 1, "eta": 2, "updated": now, "started": now - 1,
                                                     "pid": os.getpid(), "metrics": {}}))
    try:
        live = get_json(server.port, "/api/live?watch=live00000001")
        running = {r["run_id"]: r for r in live["running"]}
        p = running["live00000001"]
        assert (p["step"], p["total"], p["eta"], p["desc"], p["bar"]) == (120, 500, 9.5, "ensemble", 2)
        assert p["metrics"] == {"loss": 0.41} and p["elapsed"] >= 0 and not p["attempt"]
        assert running[ids["0.0-1"]]["attempt"] and running[ids["0.0-1"]]["step"] == 3
        assert live["status"] == {"live00000001": "running"}
        _, _, html = fetch(server.port, "/run/live00000001")
        assert 'id="live-panel" class="live-panel" >' in html      # shown, filled by the page's script
        _, _, table = fetch(server.port, "/fragment/runs?status=running")
        assert 'data-live="live00000001"' in table and 'data-cancel="live00000001"' in table
        token = live["token"]
        store.finish("live00000001", "done")
        live = get_json(server.port, "/api/live?watch=live00000001")
        assert live["status"] == {"live00000001": "done"} and live["token"] != token
    finally:
        attempt.rename(attempt.with_name("gone"))
        import shutil

        shutil.rmtree(attempt.with_name("gone"))
        store.close()


def test_start_validates_like_the_cli_and_starts_nothing_when_wrong(explorer):
    server, root, _ = explorer
    before = get_json(server.port, "/api/runs")["total"]
    cases = [({"study": "double-descent", "sets": "label_noise=1.5"}, ["run", "double-descent", "--set", "label_noise=1.5"]),
             ({"study": "double-descent", "sets": ["nope=1"]}, ["run", "double-descent", "--set", "nope=1"])]
    for body, argv in cases:
        status, reply = post_json(server.port, "/api/start", body)
        cli = run_cli(*argv, store=root)
        assert status == 400 and cli.returncode == 2
        assert cli.stderr.strip() == f"overparam: error: {reply['error']}"
    for body, message in [
        ({"study": "no-such"}, "unknown study 'no-such'; choose one of:"),
        ({"study": "double-descent", "preset": "huge"}, "unknown preset 'huge'; choose one of: quick, paper"),
        ({"study": "double-descent", "seed": "-1"}, "seed: expected a non-negative integer, got -1"),
        ({"study": "double-descent", "sets": "label_noise"}, "--set expects key=value, got 'label_noise'"),
        ({"kind": "sweep", "study": "double-descent"}, "grid: give at least one key=v1,v2,... line"),
        ({"kind": "sweep", "study": "double-descent", "grid": "label_noise=0.1,2"}, "label_noise: 2.0 is out of range"),
        ({"kind": "sweep", "study": "double-descent", "grid": "label_noise=0.1", "seeds": "0"},
         "seeds: expected a positive integer, got 0"),
        ({"kind": "walk", "study": "double-descent"}, "kind: 'walk' is not allowed; choose run or sweep"),
        ({"study": "double-descent", "sets": 5}, "sets: expected text with one key=value per line"),
    ]:
        status, reply = post_json(server.port, "/api/start", body)
        assert status == 400 and reply["error"].startswith(message) and "\n" not in reply["error"], reply
    assert get_json(server.port, "/api/runs")["total"] == before
    assert server.app.state.explorer.launcher.launches == []


def test_start_reuses_a_finished_run_unless_forced(explorer):
    from overparam.config import config_to_dict
    from overparam.runner import get_study, resolve, run_id_of

    server, root, _ = explorer
    study = get_study("am-capacity")
    config = config_to_dict(resolve(study, "quick", {"seed": "7"}))
    run_id = run_id_of(study, config)
    store = RunStore(root)
    store.begin(run_id, study.name, config, "quick")
    store.finish(run_id, "done", {"x": 1})
    store.close()
    status, reply = post_json(server.port, "/api/start", {"study": "am-capacity", "seed": 7})
    assert status == 200 and reply["reused"] and reply["run_id"] == run_id and "tick 'force'" in reply["message"]
    assert server.app.state.explorer.launcher.launches == []


def test_cancel_refuses_runs_that_are_not_running(explorer):
    server, _, ids = explorer
    status, reply = post_json(server.port, f"/api/runs/{ids['0.0-0']}/cancel", {})
    assert status == 409 and reply["error"] == f"run {ids['0.0-0']} is done; only a running run can be cancelled"
    status, reply = post_json(server.port, "/api/runs/nosuchrun000/cancel", {})
    assert status == 404 and reply["error"].startswith("no run 'nosuchrun000'")


def test_a_run_killed_outright_shows_as_interrupted(explorer):
    server, root, _ = explorer
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "overparam.cli", "--store", str(root), "run", *LONG_RUN,
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_id = wait_until(lambda: next((r["run_id"] for r in get_json(server.port, "/api/live")["running"]
                                          if r["pid"] == proc.pid), None), WAIT, "the CLI run to be listed as running")
        # it appears in the table as running, with its progress cell
        assert f'data-live="{run_id}"' in fetch(server.port, "/fragment/runs?status=running")[2]
    finally:
        proc.kill()
        proc.wait()
    live = wait_until(lambda: (d := get_json(server.port, f"/api/live?watch={run_id}"))["status"][run_id] != "running"
                      and d, WAIT, "the killed run to be recorded")
    assert live["status"][run_id] == "interrupted" and run_id not in {r["run_id"] for r in live["running"]}
    assert "killed" in get_json(server.port, f"/api/runs/{run_id}")["error"]


def test_a_run_started_from_the_explorer_outlives_it_and_stops_on_sigterm(tmp_path):
    root = tmp_path / "runs"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    ui = subprocess.Popen([sys.executable, "-m", "overparam.cli", "--store", str(root), "ui", "--port", "0"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_pid = None
    try:
        line = ui.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        status, reply = post_json(port, "/api/start", {"study": "am-in-networks", "sets": LONG_SETS})
        assert status == 200 and not reply["reused"], reply
        run_id, run_pid = reply["run_id"], reply["pid"]
        wait_until(lambda: any(r["run_id"] == run_id for r in get_json(port, "/api/live")["running"]),
                   WAIT, "the started run to be recorded as running")
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(WAIT) == 0
        # the explorer is gone; the run goes on, in a session of its own
        assert os.getsid(run_pid) == run_pid and os.getsid(run_pid) != os.getsid(0)
        os.kill(run_pid, 0)
        store = RunStore(root)
        assert store.get(run_id).status == "running"
        store.close()
        log = next((root / ".ui" / "launches").glob("*.log")).read_text()
        assert "overparam.cli --store" in log and "run am-in-networks --preset quick --set=widths=8,16,32" in log
        # cancelling is SIGTERM to that process: it records the run as interrupted
        os.kill(run_pid, signal.SIGTERM)

        def recorded():
            store = RunStore(root)
            try:
                return store.get(run_id).status != "running" and store.get(run_id).status
            finally:
                store.close()
        assert wait_until(recorded, WAIT, "the cancelled run to record itself") == "interrupted"
        run_pid = None
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
        if run_pid is not None:
            try:
                os.kill(run_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_start_runs_the_cli_command_line_it_validated(explorer, monkeypatch):
    from overparam.config import config_to_dict
    from overparam.runner import get_study, resolve, run_id_of
    from overparam.sweep import expand

    server, _, _ = explorer
    launcher = server.app.state.explorer.launcher
    spawned = []
    monkeypatch.setattr(launcher, "_spawn", lambda args, kind, study, run_ids: spawned.append((args, run_ids))
                        or type("Launch", (), {"pid": 4321})())
    status, reply = post_json(server.port, "/api/start", {"study": "double-descent", "preset": "quick", "seed": "3",
                                                          "sets": "label_noise=0.2\nwidths=4,8,16\n"})
    study = get_study("double-descent")
    expected_id = run_id_of(study, config_to_dict(resolve(study, "quick", {"label_noise": "0.2", "widths": "4,8,16"},
                                                          None, 3)))
    assert status == 200 and reply == {"kind": "run", "run_id": expected_id, "study": "double-descent",
                                       "reused": False, "pid": 4321}
    assert spawned[-1] == (["run", "double-descent", "--preset", "quick", "--set=label_noise=0.2",
                            "--set=widths=4,8,16", "--quiet", "--seed", "3"], [expected_id])
    status, reply = post_json(server.port, "/api/start", {"kind": "sweep", "study": "double-descent",
                                                          "grid": ["label_noise=0.0,0.1"], "seeds": 2,
                                                          "sets": ["epochs=3"]})
    points = expand(study, {"label_noise": ["0.0", "0.1"]}, seeds=2, preset="quick", sets={"epochs": "3"})
    assert status == 200 and reply["run_ids"] == [p.run_id for p in points] and reply["grid"] == ["label_noise"]
    assert spawned[-1][0] == ["sweep", "double-descent", "--preset", "quick", "--grid=label_noise=0.0,0.1",
                              "--seeds", "2", "--set=epochs=3", "--quiet"]
