"""Render run pages and the index with Jinja2 (autoescaped: config text is never trusted HTML).

A run's page (``report.html``) is self-contained: its figures are embedded as base64 PNG, so it can be
mailed or moved alone; the SVG files beside them are linked for print-quality copies. The index links each
study's latest figure instead of embedding it, so it stays small however many studies the store holds.

The pieces of a page (the checks table, metrics, config, a run's row) are macros in ``_parts.html`` that the
explorer (:mod:`overparam.ui`) renders too, from the view dicts built here.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any, Callable

import jinja2

from overparam import __version__
from overparam.store import RunRecord, RunStore, atomic_write_text

TEMPLATES = Path(__file__).resolve().parent / "templates"
STYLE = TEMPLATES / "style.css"


def environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    """An autoescaping environment with the report's filters and globals (the explorer adds its own loader)."""
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals["version"] = __version__
    env.filters["metric"] = fmt_metric
    return env


StudyInfo = dict[str, dict[str, str]]  # study name -> {"description": ..., "paper": ...}


def _file_b64(path: Path) -> str | None:
    """A picture file (PNG or GIF) as base64 text for a data: URL; None when it is missing."""
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def fmt_metric(value: Any) -> str:
    """A metric or config value as short text: 4 significant digits, long lists cut after 12 values."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 12:
        return f"[{', '.join(fmt_metric(v) for v in value[:12])}, … ({len(value)} values)]"
    if isinstance(value, list):
        return "[" + ", ".join(fmt_metric(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt_metric(v)}" for k, v in list(value.items())[:8]) + \
            (", …}" if len(value) > 8 else "}")
    return "—" if value is None else str(value)


_ENV = environment(jinja2.PackageLoader("overparam.report", "templates"))


def figure_files(record: RunRecord) -> list[tuple[str, str]]:
    """(name, extension) of every picture a page shows: PNG renderings and animated GIFs."""
    return [(f[:-4], f[-3:]) for f in record.figures if f.endswith((".png", ".gif"))]


def check_rows(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Checks as table rows, for both shapes results hold: {name, passed, source, expected, measured} and the
    numeric one that adds sentence, comparison, measured_value, expected_value, unit, tolerance and valid."""
    rows = []
    for c in checks:
        passed, valid = bool(c.get("passed")), c.get("valid", True) is not False
        rows.append({"name": str(c.get("name", "")), "expected": str(c.get("expected", "")),
                     "measured": str(c.get("measured", "")), "source": str(c.get("source", "")),
                     "passed": passed, "verdict": "pass" if passed else ("fail" if valid else "not measurable"),
                     "sentence": str(c.get("sentence") or ""), "unit": str(c.get("unit") or "")})
    return rows


def verdict_text(n_passed: int, n_checks: int) -> tuple[str, str]:
    """'3/4 checks passed' and its CSS class ('' without checks, 'pass' when all passed, else 'fail')."""
    if not n_checks:
        return "no checks", ""
    return f"{n_passed}/{n_checks} checks passed", "pass" if n_passed == n_checks else "fail"


def run_row(run_id: str, study: str, status: str, n_passed: int, n_checks: int, created: float,
            started: float | None, finished: float | None, href: str) -> dict[str, Any]:
    """A run's row in a runs table (the index and the explorer): status, verdict, when, how long."""
    verdict, verdict_class = verdict_text(n_passed, n_checks)
    seconds = None if started is None or finished is None else finished - started
    return {"run_id": run_id, "study": study, "status": status, "href": href, "verdict": verdict,
            "verdict_class": verdict_class,
            "when": dt.datetime.fromtimestamp(finished or started or created).strftime("%Y-%m-%d %H:%M"),
            "time": "—" if seconds is None else f"{seconds:.1f} s"}


def run_context(record: RunRecord, info: dict[str, str] | None,
                figure_src: Callable[[RunRecord, str, str], str | None],
                file_href: Callable[[RunRecord, str], str]) -> dict[str, Any]:
    """What a run's page shows; ``figure_src(record, name, ext)`` gives each figure's image source and
    ``file_href(record, file_name)`` the link to one of the run's files."""
    info = info or {}
    figures = [{"name": name, "ext": ext, "src": figure_src(record, name, ext),
                "svg_href": file_href(record, f"{name}.svg") if f"{name}.svg" in record.figures else None}
               for name, ext in figure_files(record)]
    folder = record.dir.resolve()
    rerun = f"overparam run {record.study} --store {folder.parent.parent} --config {folder / 'config.json'}"
    return {"r": record, "description": info.get("description", ""), "paper": info.get("paper", ""),
            "rerun": rerun, "figures": [f for f in figures if f["src"]], "checks": check_rows(record.checks),
            "metrics": [(k, fmt_metric(v)) for k, v in record.metrics.items()],
            "has_arrays": (record.dir / "arrays.npz").is_file()}


def _embedded(record: RunRecord, name: str, ext: str) -> str | None:
    data = _file_b64(record.dir / f"{name}.{ext}")
    return None if data is None else f"data:image/{ext};base64,{data}"


def render_run(record: RunRecord, info: dict[str, str] | None = None, index_href: str = "../../index.html") -> str:
    context = run_context(record, info, _embedded, lambda r, name: name)  # the page sits beside its files
    return _ENV.get_template("run.html").render(**context, index_href=index_href)


def write_run_report(record: RunRecord, info: dict[str, str] | None = None) -> Path:
    path = record.dir / "report.html"
    atomic_write_text(path, render_run(record, info))
    return path


def metric_summary(metrics: dict[str, Any], limit: int = 3) -> str:
    scalars = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={fmt_metric(v)}" for k, v in scalars[:limit])


def write_index(store: RunStore, infos: StudyInfo | None = None) -> Path:
    """The index of every run, grouped by study, newest first, with a link to the latest figure of each study."""
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
            pngs = [fig for fig, ext in figure_files(r) if ext == "png"]
            if thumb is None and r.status == "done" and pngs and (r.dir / f"{pngs[0]}.png").is_file():
                thumb = os.path.relpath(r.dir / f"{pngs[0]}.png", store.root)
                thumb_href = href
            n_pass = sum(bool(c.get("passed")) for c in r.checks)
            rows.append(run_row(r.run_id, r.study, r.status, n_pass, len(r.checks), r.created, r.started,
                                r.finished, href) | {"summary": metric_summary(r.metrics)})
        info = infos.get(name, {})
        studies.append({"name": name, "description": info.get("description", ""), "paper": info.get("paper", ""),
                        "runs": rows, "thumb": thumb, "thumb_href": thumb_href})
    path = store.root / "index.html"
    atomic_write_text(path, _ENV.get_template("index.html").render(studies=studies, runs=runs, root=store.root))
    return path
