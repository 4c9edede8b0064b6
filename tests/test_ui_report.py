"""The static pages the explorer shares its templates with: the index links figures (small however many studies),
a run's page stays self-contained, and both shapes of checks render the same way in both."""

from __future__ import annotations

import re

from overparam.report import render_run, write_index
from overparam.report.html import check_rows, run_row
from overparam.store import RunStore, figure_bytes, save_figure


def _figure() -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(200), [i * i for i in range(200)])
    rendered = figure_bytes(fig)
    plt.close(fig)
    return rendered


def test_index_links_figures_and_stays_small(tmp_path):
    store = RunStore(tmp_path)
    figure = _figure()
    for k in range(6):
        rec = store.begin(f"run{k:03d}", f"study-{k % 3}", {"seed": k})
        files = save_figure(rec.dir, "main", figure)
        store.finish(rec.run_id, "done", {"err": 0.1 * k}, [], files)
    index = write_index(store).read_text()
    assert "base64" not in index
    thumbs = re.findall(r'<img [^>]*src="([^"]+)"', index)
    assert len(thumbs) == 3 and all((tmp_path / t).is_file() for t in thumbs)   # the newest run of each study
    assert "study-0/run003/main.png" in thumbs
    assert len(index.encode()) < 8_000 < 3 * len(figure["png"])   # an inlined index would hold three PNGs
    page = render_run(store.get("run003"))
    assert "data:image/png;base64," in page      # a run's own page still carries its figures


def test_both_check_shapes_make_the_same_rows():
    old = {"name": "peak", "passed": True, "source": "Belkin 2019", "expected": "> 1", "measured": "2"}
    numeric = old | {"passed": False, "sentence": "peak: measured 2; expected > 1 — failed", "comparison": ">",
                     "measured_value": 2.0, "expected_value": 1.0, "unit": "", "tolerance": 0.0, "valid": False}
    rows = check_rows([old, numeric])
    assert rows[0] | {"sentence": ""} == rows[0] and rows[0]["verdict"] == "pass"
    assert rows[1]["verdict"] == "not measurable" and rows[1]["sentence"].startswith("peak: measured 2")
    assert {k: rows[0][k] for k in ("name", "expected", "measured", "source")} == \
           {k: rows[1][k] for k in ("name", "expected", "measured", "source")}
    assert check_rows([{"name": "bare"}])[0]["verdict"] == "fail"


def test_run_row_words():
    row = run_row("abc", "s", "done", 2, 3, 100.0, 100.0, 112.5, "s/abc/report.html")
    assert (row["verdict"], row["verdict_class"], row["time"]) == ("2/3 checks passed", "fail", "12.5 s")
    assert run_row("abc", "s", "running", 0, 0, 1.0, 1.0, None, "x")["verdict"] == "no checks"
    assert run_row("abc", "s", "done", 3, 3, 1.0, 1.0, 2.0, "x")["verdict_class"] == "pass"
