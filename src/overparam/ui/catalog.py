"""Read-only queries over the runs table for the explorer: pages, columns, groups over seeds, points.

Each thread gets its own SQLite connection with ``query_only`` set, so nothing here can write the store.
Config and metric values are read with ``json_extract`` in SQL (see :mod:`overparam.store.query`): a page of
the runs table parses only the cells it shows, which keeps a page fast at ten thousand runs.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overparam.store.query import compile_query, field_sql
from overparam.store import RunRecord, RunStore
from overparam.store.runs import DB_NAME, STATUSES

PAGE_SIZES = range(1, 501)
SEARCH_SQL = "instr(lower(run_id || ' ' || study || ' ' || coalesce(preset, '') || ' ' || config || ' ' || notes " \
             "|| ' ' || coalesce(error, '')), lower(?)) > 0"
_ROW_KEYS = ("run_id", "study", "status", "preset", "created", "started", "finished", "pid", "host", "n_checks",
             "n_passed")
MAX_AUTO_COLUMNS = 6     # config keys and metrics shown when the user names none (each)
STATS_SAMPLE = 1000      # the table's automatic columns are chosen from this many of the newest matching runs


class CatalogError(ValueError):
    """A request the catalog cannot answer (bad parameter): one line."""


@dataclass(frozen=True)
class RunFilter:
    """Which runs: one study, one status, a query (see overparam.store.query) and free text."""

    study: str | None = None
    status: str | None = None
    query: str | None = None
    search: str | None = None
    run_ids: tuple[str, ...] | None = None

    def where(self) -> tuple[str, list[Any]]:
        parts, params = ["1"], []
        if self.study:
            parts.append("study = ?")
            params.append(self.study)
        if self.status:
            if self.status not in STATUSES:
                raise CatalogError(f"status: {self.status!r} is not one of {', '.join(STATUSES)}")
            parts.append("status = ?")
            params.append(self.status)
        if self.query and self.query.strip():
            sql, more = compile_query(self.query)
            parts.append(sql)
            params += more
        if self.search and self.search.strip():
            parts.append(SEARCH_SQL)
            params.append(self.search.strip())
        if self.run_ids is not None:
            parts.append(f"run_id IN ({','.join('?' * len(self.run_ids))})" if self.run_ids else "0")
            params += list(self.run_ids)
        return " AND ".join(parts), params


@dataclass
class KeyStat:
    field: str          # config.KEY or metrics.KEY
    runs: int           # how many of the runs have it
    distinct: int       # how many distinct values it takes
    numeric: bool       # every value a number


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int
    columns: list[str]
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))


@dataclass
class Group:
    """The runs that share one value of the grouping key (and of the split key), and their metric."""

    x: Any
    split: Any
    values: list[float] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sem(self) -> float | None:
        """Standard error of the mean (sample standard deviation / sqrt(n)); None for one value."""
        return statistics.stdev(self.values) / math.sqrt(self.n) if self.n > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "split": self.split, "n": self.n, "mean": self.mean, "sem": self.sem,
                "min": min(self.values), "max": max(self.values), "run_ids": self.run_ids}


class Catalog:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        self._local = threading.local()
        self._watch_lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None
        self._stats_cache: dict[tuple, list[KeyStat]] = {}

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only = 1")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def record(self, run_id: str) -> RunRecord | None:
        """One run as the store reads it (through a RunStore of this thread's own)."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = RunStore(self.root)
        return store.get(run_id)

    def change_token(self) -> int:
        """A number that changes whenever another connection commits to the store (SQLite's data_version)."""
        with self._watch_lock:
            if self._watch is None:
                self._watch = self._connect()
            return self._watch.execute("PRAGMA data_version").fetchone()[0]

    # -- the runs table ----------------------------------------------------------------------------------
    def studies(self) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in self.conn.execute("SELECT study, COUNT(*) FROM runs GROUP BY study ORDER BY study")]

    def key_stats(self, flt: RunFilter) -> list[KeyStat]:
        """Every config key and numeric metric of the filtered runs (the newest STATS_SAMPLE of them), with how
        many runs have it and how many values it takes. Cached until the store changes."""
        where, params = flt.where()
        cache_key = (where, tuple(params), self.change_token())
        if cache_key in self._stats_cache:
            return self._stats_cache[cache_key]
        # the sample is chosen by rowid (sorting the rowids, not the rows' JSON), then read once
        sql = (f"WITH s AS MATERIALIZED (SELECT config, metrics FROM runs WHERE rowid IN "
               f"(SELECT rowid FROM runs WHERE {where} ORDER BY created DESC LIMIT {STATS_SAMPLE})) "
               f"SELECT 'config' AS src, j.key AS key, COUNT(*) AS n, COUNT(DISTINCT j.value) AS d, "
               f"SUM(j.type NOT IN ('integer', 'real')) AS other FROM s, json_each(s.config) AS j GROUP BY j.key "
               f"UNION ALL SELECT 'metrics', j.key, COUNT(*), COUNT(DISTINCT j.value), 0 "
               f"FROM s, json_each(s.metrics) AS j WHERE j.type IN ('integer', 'real') GROUP BY j.key")
        stats = [KeyStat(f"{r['src']}.{r['key']}", r["n"], r["d"], not r["other"])
                 for r in self.conn.execute(sql, params)]
        if len(self._stats_cache) > 64:
            self._stats_cache.clear()
        self._stats_cache[cache_key] = stats
        return stats

    def auto_columns(self, flt: RunFilter) -> list[str]:
        """The config keys that tell the runs apart (most common first) and their most common metrics."""
        stats = self.key_stats(flt)
        config = [s for s in stats if s.field.startswith("config.") and s.distinct > 1]
        metrics = [s for s in stats if s.field.startswith("metrics.")]
        pick = lambda items: [s.field for s in sorted(items, key=lambda s: (-s.runs, s.field))[:MAX_AUTO_COLUMNS]]
        return pick(config) + pick(metrics)

    def page(self, flt: RunFilter, sort: str | None = None, descending: bool = True, page: int = 1,
             size: int = 50, columns: list[str] | None = None) -> Page:
        """One page of the filtered runs, sorted on any field, with the given (or automatic) columns."""
        if size not in PAGE_SIZES:
            raise CatalogError(f"size: {size} is out of range; allowed 1 <= size <= {PAGE_SIZES[-1]}")
        if page < 1:
            raise CatalogError(f"page: {page} is out of range; pages start at 1")
        where, params = flt.where()
        columns = list(columns) if columns else self.auto_columns(flt)
        if sort and sort not in columns and sort.startswith(("config.", "metrics.")):
            columns.append(sort)
        cells, cell_params = [], []
        for i, name in enumerate(columns):
            sql, more = field_sql(name)
            cells.append(f"{sql} AS c{i}")
            cell_params += more
        order_sql, order_params = field_sql(sort) if sort else ("created", [])
        direction = "DESC" if descending else "ASC"
        # Two steps: the page's ids (and the number of matching runs, counted in the same scan), sorted on one
        # expression alone; then the shown cells of those rows only (the cells of ten thousand rows would
        # otherwise be computed for the sort to keep fifty).
        found_ids = self.conn.execute(
            f"SELECT run_id, COUNT(*) OVER () FROM runs WHERE {where} "
            f"ORDER BY {order_sql} {direction} NULLS LAST, created DESC, run_id LIMIT ? OFFSET ?",
            params + order_params + [size, (page - 1) * size]).fetchall()
        ids = [r[0] for r in found_ids]
        total = found_ids[0][1] if found_ids else \
            self.conn.execute(f"SELECT COUNT(*) FROM runs WHERE {where}", params).fetchone()[0]
        select = ", ".join(list(_ROW_KEYS[:-2]) + ["json_array_length(checks) AS n_checks",
                                                    f"{field_sql('checks.passed')[0]} AS n_passed"] + cells)
        found = {r["run_id"]: r for r in self.conn.execute(
            f"SELECT {select} FROM runs WHERE run_id IN ({','.join('?' * len(ids))})", cell_params + ids)}
        rows = [found[i] for i in ids if i in found]
        out = [{k: r[k] for k in _ROW_KEYS} | {"cells": [r[f"c{i}"] for i in range(len(columns))]} for r in rows]
        return Page(out, total, columns, page, size)

    # -- several runs, groups, points ---------------------------------------------------------------------
    def running(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT run_id, study, pid, host, started FROM runs WHERE status = 'running' "
                                 "ORDER BY started").fetchall()

    def sweep_records(self, limit: int = 50) -> list[dict[str, Any]]:
        """Finished sweeps (runs of study '<name>-sweep'), newest first: the study swept, its grid keys, points."""
        rows = self.conn.execute(
            "SELECT run_id, json_extract(config, '$.study') AS study, json_extract(config, '$.grid') AS grid, "
            "json_extract(metrics, '$.points') AS points FROM runs WHERE study LIKE '%-sweep' AND status = 'done' "
            "ORDER BY finished DESC LIMIT ?", (limit,))
        return [{"run_id": r["run_id"], "study": r["study"] or "", "points": r["points"],
                 "grid": ", ".join(json.loads(r["grid"] or "[]")) or "seeds"} for r in rows]

    def status_of(self, run_ids: list[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        rows = self.conn.execute(f"SELECT run_id, status FROM runs WHERE run_id IN ({','.join('?' * len(run_ids))})",
                                 run_ids)
        return {r[0]: r[1] for r in rows}

    def groups(self, flt: RunFilter, key: str, metric: str, split: str | None = None) -> list[Group]:
        """Finished runs grouped by the value of ``key`` (and ``split``): the metric of each run in each group.

        Runs whose metric is missing or not a number are left out. Groups come sorted by their values
        (numerically when every value is a number)."""
        where, params = flt.where()
        key_sql, key_params = field_sql(key)
        split_sql, split_params = field_sql(split) if split else ("NULL", [])
        metric_sql, metric_params = field_sql(metric)
        sql = (f"SELECT x, s, v, run_id FROM (SELECT {key_sql} AS x, {split_sql} AS s, {metric_sql} AS v, run_id, "
               f"created FROM runs WHERE status = 'done' AND {where}) WHERE typeof(v) IN ('integer', 'real') "
               f"ORDER BY created")
        by_value: dict[tuple, Group] = {}
        for x, s, v, run_id in self.conn.execute(sql, key_params + split_params + metric_params + params):
            group = by_value.setdefault((x, s), Group(x, s))
            group.values.append(float(v))
            group.run_ids.append(run_id)
        return sorted(by_value.values(), key=lambda g: (_order(g.split), _order(g.x)))

    def points(self, flt: RunFilter, keys: list[str], metric: str, limit: int = 5000) -> list[dict[str, Any]]:
        """One point per finished run: its values of ``keys`` and ``metric`` (for parallel coordinates)."""
        where, params = flt.where()
        cells, cell_params = [], []
        for i, name in enumerate(keys + [metric]):
            sql, more = field_sql(name)
            cells.append(f"{sql} AS c{i}")
            cell_params += more
        sql = (f"SELECT run_id, {', '.join(cells)} FROM runs WHERE status = 'done' AND {where} "
               f"ORDER BY created LIMIT ?")
        out = []
        for r in self.conn.execute(sql, cell_params + params + [limit]):
            metric_value = r[f"c{len(keys)}"]
            if isinstance(metric_value, (int, float)):
                out.append({"run_id": r["run_id"], "values": [r[f"c{i}"] for i in range(len(keys))],
                            "metric": float(metric_value)})
        return out


def _order(value: Any) -> tuple:
    """Numbers before text, numbers by value: the order of a sweep's axis."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))
