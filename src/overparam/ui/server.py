"""The explorer's web app (Starlette): pages rendered with the report's templates, a JSON API, and a guard.

Pages: ``/`` the runs table, ``/run/ID`` one run, ``/compare?ids=A,B`` runs side by side, ``/sweeps`` a metric
over a config key (mean and band over seeds) and parallel coordinates, ``/start`` start a run or a sweep.
The API under ``/api/`` serves the same data as JSON; ``/files/STUDY/ID/NAME`` serves a run's own files
(figures, results.json, ...), looked up in the store, never as a path taken from the request.

Every response passes through :class:`Guard`: a Host header check against DNS rebinding when bound to the
loopback address, the token when one is set, a same-origin JSON rule for every POST (a page elsewhere cannot
start or cancel runs), and headers that forbid any script or style from elsewhere. Errors are one line: JSON
``{"error": ...}`` under ``/api/`` and ``/fragment/``, a short page otherwise; a traceback never reaches the
browser (it goes to the server's log).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from overparam.config import ConfigError, describe_config
from overparam.report.html import STYLE, environment, fmt_metric, run_context, run_row
from overparam.store import RunStore, StoreError
from overparam.store.query import QueryError, field_sql
from overparam.store.runs import STATUSES
from overparam.ui.actions import ActionError, Launcher
from overparam.ui.arrays import read_arrays
from overparam.ui.catalog import Catalog, CatalogError, RunFilter

log = logging.getLogger("overparam.ui")

STATIC = Path(__file__).resolve().parent / "static"
RUN_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
FILE_NAME = re.compile(r"^[0-9A-Za-z_][0-9A-Za-z_.-]{0,200}$")
RUN_FILES = ("results.json", "config.json", "arrays.npz", "report.html")
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
TOKEN_COOKIE = "overparam_ui_token"
MAX_COMPARE = 8
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class BadRequest(HTTPException):
    def __init__(self, detail: str, status_code: int = 400):
        super().__init__(status_code=status_code, detail=detail)


# -- the guard --------------------------------------------------------------------------------------------------

def _host_name(host: str) -> str:
    """The name part of a Host header: 'localhost:8000' -> 'localhost', '[::1]:8000' -> '[::1]'."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: host check, token, same-origin POSTs, security headers."""

    def __init__(self, app, token: str | None, loopback: bool):
        self.app, self.token, self.loopback = app, token, loopback

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        request = Request(scope)
        refusal = self.refusal(request)
        if refusal is not None:
            return await refusal(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)

    def refusal(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if self.loopback and _host_name(host) not in LOOPBACK_NAMES:
            return PlainTextResponse(f"host {host!r} is not served; open the explorer at 127.0.0.1", 400)
        if self.token is not None:
            given = request.query_params.get("token")
            if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
                rest = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "token"]
                response = RedirectResponse(request.url.path + ("?" + urlencode(rest) if rest else ""), 303)
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return response
            bearer = request.headers.get("authorization", "")
            presented = bearer[7:] if bearer.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")
            if not hmac.compare_digest(presented.encode(), self.token.encode()):
                return PlainTextResponse("this explorer needs its token: open the URL that `overparam ui` printed "
                                         "(with ?token=...)", 401)
        if request.method not in ("GET", "HEAD"):
            if request.method != "POST":
                return PlainTextResponse(f"method {request.method} is not allowed", 405)
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return PlainTextResponse("a POST must send application/json", 415)
            origin = request.headers.get("origin")
            if request.headers.get("sec-fetch-site") == "cross-site" or (
                    origin is not None and origin not in (f"http://{host}", f"https://{host}")):
                return PlainTextResponse("a POST must come from the explorer's own pages", 403)
        return None


# -- the app ----------------------------------------------------------------------------------------------------

@dataclass
class Explorer:
    root: Path
    catalog: Catalog
    launcher: Launcher
    templates: jinja2.Environment

    @property
    def live(self):
        return self.launcher.live

    def infos(self) -> dict[str, dict[str, str]]:
        from overparam.runner import study_infos

        return study_infos()

    def record(self, run_id: str):
        if not RUN_ID.match(run_id):
            raise BadRequest(f"{run_id[:80]!r} is not a run id", 404)
        return self.catalog.record(run_id)

    def render(self, name: str, status: int = 200, **context) -> HTMLResponse:
        context.setdefault("nav", "")
        page = self.templates.get_template(name).render(store_root=str(self.root), **context)
        return HTMLResponse(page, status_code=status)


def _int_param(request: Request, name: str, default: int, low: int = 1, high: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected a whole number, got {raw[:40]!r}") from None
    if value < low or (high is not None and value > high):
        allowed = f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}"
        raise BadRequest(f"{name}: {value} is out of range; allowed {allowed}")
    return value


def _ids_param(request: Request, name: str = "ids") -> tuple[str, ...] | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    ids = tuple(dict.fromkeys(i.strip() for i in raw.split(",") if i.strip()))
    bad = [i for i in ids if not RUN_ID.match(i)]
    if bad:
        raise BadRequest(f"{name}: {bad[0][:80]!r} is not a run id")
    return ids


def run_filter(request: Request) -> RunFilter:
    q = request.query_params
    return RunFilter(study=q.get("study") or None, status=q.get("status") or None, query=q.get("query") or None,
                     search=q.get("search") or None, run_ids=_ids_param(request))


def _columns_param(request: Request) -> list[str] | None:
    raw = request.query_params.get("cols")
    if not raw:
        return None
    columns = [c.strip() for c in raw.split(",") if c.strip()]
    for c in columns:
        field_sql(c)  # QueryError names an unknown field
    return columns[:24]


def _table(ex: Explorer, request: Request) -> dict[str, Any]:
    """The runs table for the request's filters, sort and page (raises on a bad parameter)."""
    q = request.query_params
    sort = q.get("sort") or None
    if sort:
        field_sql(sort)
    direction = q.get("dir") or "desc"
    if direction not in ("asc", "desc"):
        raise BadRequest(f"dir: {direction[:20]!r} is not allowed; choose asc or desc")
    flt = run_filter(request)
    page = ex.catalog.page(flt, sort, direction == "desc", _int_param(request, "page", 1),
                           _int_param(request, "size", 50, 1, 500), _columns_param(request))
    return {"page": page, "filter": flt, "sort": sort, "dir": direction}


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    return run_row(row["run_id"], row["study"], row["status"], row["n_passed"] or 0, row["n_checks"] or 0,
                   row["created"], row["started"], row["finished"], f"/run/{row['run_id']}") | {
        "preset": row["preset"] or "", "cells": [_cell(v) for v in row["cells"]]}


def _cell(value: Any) -> str:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return fmt_metric(json.loads(value))
        except ValueError:
            pass
    return fmt_metric(value)


def _table_context(request: Request, table: dict[str, Any]) -> dict[str, Any]:
    page, sort, direction = table["page"], table["sort"], table["dir"]
    base = {k: v for k, v in request.query_params.items() if k not in ("page", "sort", "dir")}

    def href(**changes) -> str:
        params = {**base, "sort": sort or "", "dir": direction, "page": page.page} | changes
        return "/?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

    def sort_href(field: str) -> str:
        return href(sort=field, dir="asc" if sort == field and direction == "desc" else "desc", page=1)

    fixed = [("run", "run_id"), ("status", "status"), ("finished", "created"), ("time", "seconds"),
             ("verdicts", "checks.passed"), ("study", "study"), ("preset", "preset")]
    columns = [{"field": c, "label": c.split(".", 1)[1] if "." in c else c, "kind": c.split(".", 1)[0]}
               for c in page.columns]
    groups: list[list] = []   # consecutive columns of one kind (config, metrics) under one heading
    for c in columns:
        if groups and groups[-1][0] == c["kind"]:
            groups[-1][1] += 1
        else:
            groups.append([c["kind"], 1])
    return {"rows": [_row_view(r) for r in page.rows], "columns": columns, "column_groups": groups,
            "fixed": fixed, "page": page,
            "sort": sort, "dir": direction, "sort_href": sort_href,
            "prev_href": href(page=page.page - 1) if page.page > 1 else None,
            "next_href": href(page=page.page + 1) if page.page < page.pages else None}


def create_app(root: str | Path, token: str | None = None, loopback: bool = True) -> Starlette:
    root = Path(root)
    store = RunStore(root)
    try:
        store.conn  # creates the store when it is new; records dead processes' runs as interrupted
    finally:
        store.close()
    catalog = Catalog(root)
    loader = jinja2.ChoiceLoader([jinja2.PackageLoader("overparam.ui", "templates"),
                                  jinja2.PackageLoader("overparam.report", "templates")])
    ex = Explorer(root, catalog, Launcher(catalog), environment(loader))
    # The studies (and torch with them) are imported in the background: pages that only read the store are
    # served at once; a page that names a study's description waits for this import if it is not done yet.
    threading.Thread(target=ex.infos, name="import-studies", daemon=True).start()

    # -- pages --------------------------------------------------------------------------------------------------
    def runs_page(request: Request):
        flt_error, table = None, None
        try:
            table = _table(ex, request)
        except (QueryError, CatalogError, BadRequest) as exc:
            flt_error = exc.detail if isinstance(exc, BadRequest) else str(exc)
        q = request.query_params
        context = {"studies": ex.catalog.studies(), "statuses": STATUSES, "error": flt_error,
                   "q": {k: q.get(k, "") for k in ("study", "status", "query", "search", "size", "cols", "ids")}}
        if table is not None:
            context |= _table_context(request, table)
        return ex.render("runs.html", nav="runs", status=400 if flt_error else 200, **context)

    def runs_fragment(request: Request):
        table = _table(ex, request)
        return ex.render("_runs_table.html", **_table_context(request, table))

    def run_page(request: Request):
        run_id = request.path_params["run_id"]
        record = ex.record(run_id)
        if record is None:
            launch = ex.launcher.launch_of(run_id)
            if launch is None:
                raise BadRequest(f"no run {run_id!r} in {ex.root}", 404)
            return ex.render("starting.html", run_id=run_id, launch=launch.to_dict())
        info = ex.infos().get(record.study) or _sweep_info(record)
        context = run_context(record, info, lambda r, name, ext: _file_url(r.study, r.run_id, f"{name}.{ext}"),
                              lambda r, name: _file_url(r.study, r.run_id, name))
        return ex.render("run.html", **context, live=ex.live.of(run_id),
                         sweep_link=_sweep_link(record))

    def compare_page(request: Request):
        ids = _ids_param(request) or ()
        if len(ids) < 2:
            raise BadRequest("compare: choose at least two runs (ids=A,B)")
        if len(ids) > MAX_COMPARE:
            raise BadRequest(f"compare: at most {MAX_COMPARE} runs at once, got {len(ids)}")
        records = []
        for run_id in ids:
            record = ex.record(run_id)
            if record is None:
                raise BadRequest(f"no run {run_id!r} in {ex.root}", 404)
            records.append(record)
        return ex.render("compare.html", **compare_context(records))

    def sweeps_page(request: Request):
        return ex.render("sweeps.html", nav="sweeps", **sweeps_context(ex, request))

    def start_page(request: Request):
        from overparam.studies import REGISTRY

        studies = [{"name": s.name, "description": s.description} for s in REGISTRY.values()]
        return ex.render("start.html", nav="start", studies=studies, chosen=request.query_params.get("study", ""))

    # -- files ----------------------------------------------------------------------------------------------------
    def run_file(request: Request):
        study, run_id, name = (request.path_params[k] for k in ("study", "run_id", "name"))
        record = ex.record(run_id)
        if record is None or record.study != study or not FILE_NAME.match(name):
            raise BadRequest("no such file", 404)
        if name not in record.figures and name not in RUN_FILES:
            raise BadRequest("no such file", 404)
        path = (ex.root / record.study / record.run_id / name).resolve()
        if not path.is_relative_to(ex.root.resolve()) or not path.is_file():
            raise BadRequest("no such file", 404)
        return FileResponse(path)

    def report_css(request: Request):
        return FileResponse(STYLE, media_type="text/css")

    # -- api ------------------------------------------------------------------------------------------------------
    def api_runs(request: Request):
        table = _table(ex, request)
        page = table["page"]
        return JSONResponse({"total": page.total, "page": page.page, "size": page.size, "pages": page.pages,
                             "columns": page.columns,
                             "rows": [{k: v for k, v in r.items()} for r in page.rows]})

    def api_run(request: Request):
        record = ex.record(request.path_params["run_id"])
        if record is None:
            raise BadRequest(f"no run {request.path_params['run_id']!r} in {ex.root}", 404)
        return JSONResponse(record.results() | {"live": ex.live.of(record.run_id)})

    def api_arrays(request: Request):
        record = ex.record(request.path_params["run_id"])
        if record is None:
            raise BadRequest(f"no run {request.path_params['run_id']!r} in {ex.root}", 404)
        return JSONResponse({"run_id": record.run_id, "arrays": read_arrays(record.dir / "arrays.npz")})

    def api_live(request: Request):
        running = ex.live.running()
        ids = _ids_param(request, "watch") or ()
        return JSONResponse({"token": ex.catalog.change_token(), "running": running,
                             "status": ex.catalog.status_of(list(ids))})

    def api_studies(request: Request):
        from overparam.studies import REGISTRY

        return JSONResponse([{"name": s.name, "description": s.description, "paper": s.paper,
                              "presets": list(s.presets)} for s in REGISTRY.values()])

    def api_study(request: Request):
        from overparam.runner import get_study

        study = get_study(request.path_params["name"])
        keys = [row | {"default": _plain(row["default"]),
                       "presets": {p: _plain(v[row["key"]]) for p, v in study.presets.items() if row["key"] in v}}
                for row in describe_config(study.config)]
        return JSONResponse({"name": study.name, "description": study.description, "paper": study.paper,
                             "presets": list(study.presets), "keys": keys})

    def api_keys(request: Request):
        stats = ex.catalog.key_stats(run_filter(request))
        return JSONResponse([s.__dict__ for s in stats])

    def api_groups(request: Request):
        flt, key, metric, split = _sweep_params(ex, request)
        groups = ex.catalog.groups(flt, key, metric, split)
        return JSONResponse({"key": key, "metric": metric, "split": split, "groups": [g.to_dict() for g in groups]})

    def api_points(request: Request):
        flt, _, metric, _ = _sweep_params(ex, request)
        keys = [k.strip() for k in request.query_params.get("keys", "").split(",") if k.strip()]
        for k in keys:
            field_sql(k)
        return JSONResponse({"keys": keys, "metric": metric, "points": ex.catalog.points(flt, keys[:12], metric)})

    async def api_start(request: Request):
        body = await _json_body(request)
        from starlette.concurrency import run_in_threadpool

        return JSONResponse(await run_in_threadpool(ex.launcher.start, body))

    def api_cancel(request: Request):
        run_id = request.path_params["run_id"]
        if not RUN_ID.match(run_id):
            raise BadRequest(f"{run_id[:80]!r} is not a run id", 404)
        return JSONResponse(ex.launcher.cancel(run_id))

    routes = [
        Route("/", runs_page), Route("/fragment/runs", runs_fragment), Route("/run/{run_id}", run_page),
        Route("/compare", compare_page), Route("/sweeps", sweeps_page), Route("/start", start_page),
        Route("/files/{study}/{run_id}/{name}", run_file), Route("/static/report.css", report_css),
        Route("/api/runs", api_runs), Route("/api/runs/{run_id}", api_run),
        Route("/api/runs/{run_id}/arrays", api_arrays), Route("/api/runs/{run_id}/cancel", api_cancel,
                                                              methods=["POST"]),
        Route("/api/live", api_live), Route("/api/studies", api_studies), Route("/api/studies/{name}", api_study),
        Route("/api/keys", api_keys), Route("/api/groups", api_groups), Route("/api/points", api_points),
        Route("/api/start", api_start, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {HTTPException: _http_error(ex), Exception: _server_error(ex)}
    for kind in (QueryError, CatalogError, ConfigError, StoreError, ActionError):
        handlers[kind] = _user_error(ex)
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.explorer = ex
    app.add_middleware(Guard, token=token, loopback=loopback)
    return app


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > 100_000:
        raise BadRequest("request body too large", 413)
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _file_url(study: str, run_id: str, name: str) -> str:
    from urllib.parse import quote

    return f"/files/{quote(study)}/{quote(run_id)}/{quote(name)}"


def _sweep_info(record) -> dict[str, str]:
    if record.study.endswith("-sweep"):
        return {"description": f"Sweep of {record.config.get('study', record.study[:-6])} over "
                               f"{', '.join(record.config.get('grid') or []) or 'seeds'}", "paper": ""}
    return {}


def _sweep_link(record) -> str | None:
    """For a stored sweep: its points in the sweeps view."""
    if not record.study.endswith("-sweep") or not record.config.get("run_ids"):
        return None
    grid = record.config.get("grid") or []
    params = {"study": record.config.get("study", record.study[:-6]), "sweep": record.run_id}
    if grid:
        params["key"] = f"config.{grid[0]}"
    return "/sweeps?" + urlencode(params)


def _sweep_params(ex: Explorer, request: Request):
    q = request.query_params
    study = q.get("study")
    if not study:
        raise BadRequest("study: choose a study")
    key, metric, split = q.get("key"), q.get("metric"), q.get("split") or None
    if not metric:
        raise BadRequest("metric: choose a metric (metrics.KEY)")
    for name in (key, metric, split):
        if name:
            field_sql(name)
    flt = RunFilter(study=study, query=q.get("query") or None, run_ids=_sweep_ids(ex, q.get("sweep")))
    return flt, key, metric, split


def _sweep_ids(ex: Explorer, sweep_id: str | None) -> tuple[str, ...] | None:
    if not sweep_id:
        return None
    record = ex.record(sweep_id)
    if record is None or not record.study.endswith("-sweep"):
        raise BadRequest(f"sweep: no stored sweep {sweep_id!r}", 404)
    return tuple(record.config.get("run_ids") or ())


def _default_key(config_keys, sweeps, study: str, sweep: str) -> str:
    """The key a sweep of this study was run over (the chosen one, else the newest), else the key with the most
    values (seed last)."""
    fields = [s.field for s in config_keys]
    for record in sweeps:
        grid = [f"config.{k.strip()}" for k in record["grid"].split(",")]
        if (record["run_id"] == sweep or (not sweep and record["study"] == study)) and grid[0] in fields:
            return grid[0]
    ranked = sorted(config_keys, key=lambda s: (s.field == "config.seed", -s.distinct, s.field))
    return ranked[0].field if ranked else ""


def _default_metric(metric_keys, config_keys) -> str:
    """A metric that varies, is not a copy of a config key, and names an error or a loss when one does."""
    config_names = {s.field[7:] for s in config_keys}
    ranked = sorted(metric_keys, key=lambda s: (s.distinct < 2, s.field[8:] in config_names,
                                                not re.search(r"error|loss|acc", s.field), -s.runs, s.field))
    return ranked[0].field if ranked else ""


def compare_context(records) -> dict[str, Any]:
    """Config and metrics side by side (rows where the runs differ are marked), checks by name, figures."""
    def rows(get) -> list[dict[str, Any]]:
        keys = list(dict.fromkeys(k for r in records for k in get(r)))
        out = []
        for k in keys:
            values = [get(r).get(k, None) for r in records]
            texts = [fmt_metric(v) if k in get(r) else "—" for v, r in zip(values, records)]
            out.append({"key": k, "cells": texts, "differs": len({json.dumps(v, sort_keys=True) for v in values}) > 1})
        return out

    check_names = list(dict.fromkeys(c.get("name", "") for r in records for c in r.checks))
    checks = [{"name": n, "cells": [next(("pass" if c.get("passed") else "fail" for c in r.checks
                                           if c.get("name") == n), "—") for r in records]} for n in check_names]
    figure_names = [f for f in records[0].figures if f.endswith(".png") and all(f in r.figures for r in records[1:])]
    figures = [{"name": f[:-4], "srcs": [_file_url(r.study, r.run_id, f) for r in records]} for f in figure_names]
    return {"runs": records, "config": rows(lambda r: r.config),
            "metrics": rows(lambda r: {k: v for k, v in r.metrics.items() if not isinstance(v, (list, dict))}),
            "checks": checks, "figures": figures}


def sweeps_context(ex: Explorer, request: Request) -> dict[str, Any]:
    q = request.query_params
    studies = [(s, n) for s, n in ex.catalog.studies() if not s.endswith("-sweep")]
    sweeps = ex.catalog.sweep_records()
    study = q.get("study") or (studies[0][0] if studies else "")
    sweep = q.get("sweep") or ""
    flt = RunFilter(study=study or None, status="done", run_ids=_sweep_ids(ex, sweep) if sweep else None)
    stats = ex.catalog.key_stats(flt) if study else []
    config_keys = sorted((s for s in stats if s.field.startswith("config.") and s.distinct > 1),
                         key=lambda s: (s.field == "config.seed", -s.runs, s.field))
    metric_keys = sorted((s for s in stats if s.field.startswith("metrics.")), key=lambda s: (-s.runs, s.field))
    key = q.get("key") or _default_key(config_keys, sweeps, study, sweep)
    metric = q.get("metric") or _default_metric(metric_keys, config_keys)
    return {"studies": studies, "study": study, "sweeps": sweeps,
        "sweep": sweep, "config_keys": [s.field for s in config_keys], "metric_keys": [s.field for s in metric_keys],
        "key": key, "metric": metric, "split": q.get("split", ""), "band": q.get("band", "sem"),
        "query": q.get("query", "")}


# -- errors: one line, never a traceback --------------------------------------------------------------------------

def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/fragment/"))


def _error_response(ex: Explorer, request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return ex.render("error.html", status=status, status_code=status, message=message)


def _http_error(ex: Explorer):
    async def handle(request: Request, exc: HTTPException) -> Response:
        return _error_response(ex, request, exc.status_code, str(exc.detail))
    return handle


def _user_error(ex: Explorer):
    async def handle(request: Request, exc: Exception) -> Response:
        return _error_response(ex, request, getattr(exc, "status", 400), str(exc))
    return handle


def _server_error(ex: Explorer):
    async def handle(request: Request, exc: Exception) -> Response:
        log.exception("error serving %s", request.url.path)
        return _error_response(ex, request, 500, f"internal error ({type(exc).__name__}); the server's log has "
                                                 f"the details")
    return handle
