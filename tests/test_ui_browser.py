"""The explorer in a real browser: Playwright for Python driving the system's Chromium (Debian's ``chromium``;
never a downloaded browser). Filter the table, open a run and use its plots, compare two runs, read a sweep,
start a run and watch its progress advance, cancel it, and see a run started from the command line appear.

Without Chromium (or Playwright) these tests skip; under CI (``CI`` set) they fail instead, since .ci/run
installs Chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_interrupt import wait_until
from test_ui_server import LONG_RUN, LONG_SETS, NOISES, WAIT, peak_error
from test_ui_server import explorer  # noqa: F401  (the fixture: a small store and its server)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = WAIT * 1000

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails under CI)
    expect = None


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _unavailable(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser tests need {why} (.ci/run installs it)", pytrace=False)
    pytest.skip(f"browser tests need {why}")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package")
    path = chromium_path()
    if path is None:
        _unavailable("Debian's chromium (/usr/bin/chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security" in m.text else None)
    expect.set_options(timeout=TIMEOUT_MS)
    yield page
    context.close()
    assert not errors, errors   # no script error and nothing the Content-Security-Policy refused, on any page


def rows(page) -> list[str]:
    return page.locator("#runs-table tbody tr[data-run]").evaluate_all("rs => rs.map(r => r.dataset.run)")


def wait_rows(page, count: int) -> None:
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(count)


def test_filter_and_sort_the_runs_table(page, explorer):
    server, _, ids = explorer
    page.goto(server.url + "/")
    assert len(rows(page)) == 12
    page.fill("#query", "config.label_noise = 0.1")
    wait_rows(page, 3)
    assert set(rows(page)) == {ids[f"0.1-{s}"] for s in range(3)}
    assert "query=config.label_noise" in page.url            # the URL keeps the filter (shareable, reloadable)
    # a bad query: one line under the filters, the table as it was
    page.fill("#query", "config.label_noise >")
    page.wait_for_selector("#query-error:not([hidden])")
    assert page.inner_text("#query-error").startswith("query: expected a value") and len(rows(page)) == 3
    page.fill("#query", "")
    page.select_option("select[name=status]", "failed")
    wait_rows(page, 1)
    assert page.is_hidden("#query-error") and rows(page) == [ids["failed"]]
    page.select_option("select[name=status]", "")
    page.fill("#search", "toy notes")
    wait_rows(page, 9)
    # sort on a metric column: ascending, then descending
    page.click("a.sort[data-field='metrics.peak_test_error']")
    expected = [ids[f"{n}-{s}"] for _, n, s in sorted((peak_error(n, s), n, s) for n in NOISES for s in range(3))]
    expect(page.locator("a.sort[data-field='metrics.peak_test_error'] .arrow")).to_have_count(1)
    order = rows(page)
    assert order in (expected, expected[::-1])
    page.click("a.sort[data-field='metrics.peak_test_error']")
    expect(page.locator("#runs-table tbody tr[data-run]").first).not_to_have_attribute("data-run", order[0])
    assert rows(page) == order[::-1]


def test_open_a_run_and_use_its_plots(page, explorer):
    server, _, ids = explorer
    page.goto(server.url + "/?search=toy%20notes")
    page.click(f"a[href='/run/{ids['0.2-1']}']")
    page.wait_for_url(f"**/run/{ids['0.2-1']}")
    assert page.locator("table.checks tr").count() == 3 and "not measurable" in page.inner_text("table.checks")
    assert page.locator("figure img").first.evaluate("img => img.complete && img.naturalWidth > 0")
    plot = page.locator("#arrays .plot-panel").first
    plot.locator(".uplot canvas").wait_for()
    assert plot.locator("select").first.input_value() == "test_error"          # not an axis-like array
    assert plot.locator("select").nth(1).input_value() == "widths"             # widths as x, by name and shape
    # hover: the legend shows the values under the cursor
    plot.locator(".u-over").scroll_into_view_if_needed()
    box = plot.locator(".u-over").bounding_box()
    legend = plot.locator(".u-legend .u-series").nth(1).locator(".u-value")
    page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    expect(legend).not_to_have_text("--")
    assert float(legend.inner_text()) > 0
    # zoom: after dragging across the left part of the plot, its middle is a smaller width than before
    x_value = plot.locator(".u-legend .u-series").first.locator(".u-value")
    middle_before = float(x_value.inner_text())
    page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.8, steps=5)
    page.mouse.up()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    wait_until(lambda: x_value.inner_text() != "--" and float(x_value.inner_text()) < middle_before, WAIT, "the zoom")
    # log axes
    plot.locator("label:has-text('log x') input").check()
    plot.locator("label:has-text('log y') input").check()
    plot.locator(".uplot canvas").wait_for()
    assert "nothing to plot" not in plot.inner_text()


def test_compare_two_runs(page, explorer):
    server, _, ids = explorer
    page.goto(server.url + "/?search=toy%20notes")
    page.check(f"input.pick[value='{ids['0.0-0']}']")
    assert page.is_disabled("#compare-btn")
    page.check(f"input.pick[value='{ids['0.2-0']}']")
    page.click("#compare-btn")
    page.wait_for_url("**/compare?ids=*")
    differs = page.locator("#compare-config tr.differs th").all_inner_texts()
    assert "label_noise" in differs and "peak_test_error" in differs and "seed" not in differs
    page.check("#only-diff")
    assert page.locator("#compare-config tr.same").first.is_hidden()
    overlay = page.locator("#overlay .plot-panel")
    overlay.locator(".uplot canvas").wait_for()
    labels = overlay.locator(".u-legend .u-series .u-label").all_inner_texts()
    assert ids["0.0-0"] in labels and ids["0.2-0"] in labels


def test_sweep_view_mean_over_seeds_and_parallel_coordinates(page, explorer):
    server, _, ids = explorer
    page.goto(server.url + f"/sweeps?study=toy&sweep={ids['sweep']}")
    page.wait_for_selector("#groups tr:nth-child(4)")
    cells = page.locator("#groups tr").nth(1).locator("td").all_inner_texts()
    mean = sum(peak_error(0.0, s) for s in range(3)) / 3
    assert cells[0] == "0" and cells[1] == "3" and abs(float(cells[2]) - mean) < 1e-3
    page.locator("#sweep-plot .uplot canvas").wait_for()
    lines = page.locator("#parcoords path.pc-line")
    lines.first.wait_for(state="attached")
    assert lines.count() == 9
    # brush the metric axis: keep its upper half
    hit = page.locator("#parcoords .pc-metric .pc-hit")
    hit.scroll_into_view_if_needed()
    box = hit.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.5, steps=4)
    page.mouse.up()
    kept = int(re.match(r"(\d+) of 9", page.inner_text(".pc-count")).group(1))
    assert 0 < kept < 9 and page.locator("#parcoords path.pc-dim").count() == 9 - kept


def test_start_a_run_watch_its_progress_and_cancel_it(page, explorer):
    server, _, _ = explorer
    page.goto(server.url + "/start")
    page.select_option("#start-study", "am-in-networks")
    page.wait_for_selector("#study-keys button.key:has-text('epochs')")
    page.fill("#start-sets", "epochs=0")
    page.click("#start-btn")
    page.wait_for_selector("#start-error:not([hidden])")
    assert page.inner_text("#start-error") == "epochs: 0 is out of range; allowed 1 <= value <= 10000"
    page.fill("#start-sets", "\n".join(LONG_SETS))
    page.click("#start-btn")
    page.wait_for_url(re.compile(r".*/run/[0-9a-f]{12}$"))
    run_id = page.url.rsplit("/", 1)[1]
    step = re.compile(r"am-in-networks: (\d+)/60000")
    expect(page.locator("#live-text")).to_have_text(re.compile(r"am-in-networks: [1-9]\d*/60000"))
    first = int(step.search(page.inner_text("#live-text")).group(1))
    assert "elapsed" in page.inner_text("#live-text")
    wait_until(lambda: int(step.search(page.inner_text("#live-text")).group(1)) > first, WAIT, "the step to advance")
    page.click("#cancel-btn")
    page.wait_for_selector("#status-line b.status-interrupted")
    assert page.is_hidden("#live-panel") and "interrupted" in page.inner_text("pre.error")
    launcher = server.app.state.explorer.launcher
    launch = next(l for l in launcher.launches if run_id in l.run_ids)
    assert launch.process.wait(WAIT) == 130   # the CLI's exit status for an interrupted run


def test_a_run_started_from_the_command_line_appears_and_is_cancelled_from_the_table(page, explorer):
    server, root, _ = explorer
    page.goto(server.url + "/")
    count = len(rows(page))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "overparam.cli", "--store", str(root), "run", *LONG_RUN,
                             "--set", "seed=5", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_rows(page, count + 1)                              # no reload: the table follows the store
        row = page.locator("#runs-table tbody tr.row-running")
        row.locator("[data-live]").filter(has_text=re.compile(r"/60000")).wait_for()
        run_id = row.get_attribute("data-run")
        row.locator("button.cancel").click()
        page.wait_for_selector(f"#runs-table tbody tr.row-interrupted[data-run='{run_id}']")
        assert page.locator("#runs-table tbody tr.row-running").count() == 0
        assert proc.wait(WAIT) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
