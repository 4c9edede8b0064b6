import re

from overparam.report import render_run, write_index, write_run_report
from overparam.store import RunStore


def _finished_run(tmp_path, config):
    store = RunStore(tmp_path)
    store.begin("r00001", "demo", config)
    rec = store.finish("r00001", "done", {"err": 0.5},
                       [{"name": "<b>peak</b>", "expected": "a", "measured": "b", "passed": False, "source": "paper"}])
    return store, rec


def test_config_text_is_escaped_and_page_self_contained(tmp_path):
    store, rec = _finished_run(tmp_path, {"data_dir": "<script>alert(1)</script>", "seed": 0})
    html = render_run(rec, {"description": "d & d", "paper": "p"})
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "<b>peak</b>" not in html and "&lt;b&gt;peak&lt;/b&gt;" in html
    assert "d &amp; d" in html
    # nothing loaded from elsewhere: no external scripts, stylesheets or image sources
    assert not re.search(r'<(script|link)\b', html)
    assert not re.search(r'src="(?!data:)', html)
    assert ">fail<" in html


def test_index_lists_every_run_with_status_and_verdict(tmp_path):
    store, rec = _finished_run(tmp_path, {"seed": 0})
    store.begin("r00002", "other", {"seed": 1})
    store.finish("r00002", "failed", error="boom")
    write_run_report(rec)
    index = write_index(store, {"demo": {"description": "Demo study", "paper": "Someone 2020"}}).read_text()
    assert "r00001" in index and "r00002" in index and "demo/r00001/report.html" in index
    assert "0/1 checks passed" in index and "failed" in index and "Demo study" in index


def test_prerendered_gif_is_written_and_shown_animated(tmp_path):
    from overparam.runner import Payload, record

    store = RunStore(tmp_path)
    store.begin("r00003", "demo", {"seed": 0})
    gif = b"GIF89a" + bytes(20)
    rec = record(store, "r00003", Payload("done", {"x": 1}, [], {}, {"anim": {"gif": gif}}))
    assert (rec.dir / "anim.gif").read_bytes() == gif and "anim.gif" in rec.figures
    html = render_run(rec)
    assert 'src="data:image/gif;base64,' in html and "anim.svg" not in html
