"""Render run pages and the index with Jinja2 (autoescaped: config text is never trusted HTML).

Pages are self-contained: figures are embedded as base64 PNG, so a page can be mailed or moved
alone. The SVG files beside them are linked for print-quality copies.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any

import jinja2

from overparam import __version__
from overparam.store import RunRecord, RunStore, atomic_write_text

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("overparam.report", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined)
_ENV.globals["version"] = __version__

StudyInfo = dict[str, dict[str, str]]  # study name -> {"description": ..., "paper": ...}


def _file_b64(path: Path) -> str | None:
    """A picture file (PNG or GIF) as base64 text for a data: URL; None when it is missing."""
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def _fmt_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 12:
        return f"[{', '.join(_fmt_metric(v) for v in value[:12])}, … ({len(value)} values)]"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt_metric(v) for v in value) + "]"
    return "—" if value is None else str(value)


def _figure_files(record: RunRecord) -> list[tuple[str, str]]:
    """(name, extension) of every picture a page shows: PNG renderings and animated GIFs."""
    return [(f[:-4], f[-3:]) for f in record.figures if f.endswith((".png", ".gif"))]


def render_run(record: RunRecord, info: dict[str, str] | None = None, index_href: str = "../../index.html") -> str:
    info = info or {}
    figures = [{"name": name, "ext": ext, "data": _file_b64(record.dir / f"{name}.{ext}")}
               for name, ext in _figure_files(record)]
    folder = record.dir.resolve()
    rerun = f"overparam run {record.study} --store {folder.parent.parent} --config {folder / 'config.json'}"
    return _ENV.get_template("run.html").render(
        r=record, description=info.get("description", ""), paper=info.get("paper", ""), rerun=rerun,
        figures=[f for f in figures if f["data"]], index_href=index_href,
        metrics=[(k, _fmt_metric(v)) for k, v in record.metrics.items()],
        has_arrays=(record.dir / "arrays.npz").is_file())


def write_run_report(record: RunRecord, info: dict[str, str] | None = None) -> Path:
    path = record.dir / "report.html"
    atomic_write_text(path, render_run(record, info))
    return path


def _summary(record: RunRecord, limit: int = 3) -> str:
    scalars = [(k, v) for k, v in record.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={_fmt_metric(v)}" for k, v in scalars[:limit])


def write_index(store: RunStore, infos: StudyInfo | None = None) -> Path:
    """The index of every run, grouped by study, newest first, with the latest figure of each study."""
    infos = infos or {}
    runs = store.list_runs()
    by_study: dict[str, list[RunRecord]] = {}
    for record in sorted(runs, key=lambda r: r.started or r.created, reverse=True):
        by_study.setdefault(record.study, []).append(record)
    studies = []
    for name in sorted(by_study):
        rows, thumb, thumb_href = [], None, None
        for r in by_study[name]:
            href = os.path.relpath(r.dir / "report.html", store.root)
            pngs = [name for name, ext in _figure_files(r) if ext == "png"]
            if thumb is None and r.status == "done" and pngs:
                thumb = _file_b64(r.dir / f"{pngs[0]}.png")
                thumb_href = href
            n_pass = sum(bool(c.get("passed")) for c in r.checks)
            rows.append({
                "run_id": r.run_id, "status": r.status, "href": href, "verdict": r.verdict, "summary": _summary(r),
                "verdict_class": "" if not r.checks else ("pass" if n_pass == len(r.checks) else "fail"),
                "when": dt.datetime.fromtimestamp(r.finished or r.started or r.created).strftime("%Y-%m-%d %H:%M"),
                "time": "—" if r.seconds is None else f"{r.seconds:.1f} s"})
        info = infos.get(name, {})
        studies.append({"name": name, "description": info.get("description", ""), "paper": info.get("paper", ""),
                        "runs": rows, "thumb": thumb, "thumb_href": thumb_href})
    path = store.root / "index.html"
    atomic_write_text(path, _ENV.get_template("index.html").render(studies=studies, runs=runs, root=store.root))
    return path
