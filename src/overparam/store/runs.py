"""The run store: one SQLite database (the index) plus one folder per run (the artifacts).

Layout under the store root (default ``./runs``, or ``--store DIR`` / ``OVERPARAM_STORE``)::

    overparam.db                 runs table: id, study, status, config, metrics, checks, times, error
    <study>/<run-id>/config.json results.json arrays.npz *.png *.svg report.html
    index.html                   written by overparam.report

The database row and ``results.json`` change together at each state change (running -> done,
diverged, failed or interrupted); files are replaced atomically and the row is updated in a
transaction, so a reader never sees a run marked done whose results are half-written. A process
killed outright (SIGKILL) leaves its row ``running``: the next store open finds the dead pid and
marks the run ``interrupted``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overparam.store.files import to_jsonable, write_json

STATUSES = ("running", "done", "diverged", "failed", "interrupted")
DB_NAME = "overparam.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    study    TEXT NOT NULL,
    status   TEXT NOT NULL,
    config   TEXT NOT NULL,
    metrics  TEXT NOT NULL DEFAULT '{}',
    checks   TEXT NOT NULL DEFAULT '[]',
    figures  TEXT NOT NULL DEFAULT '[]',
    notes    TEXT NOT NULL DEFAULT '',
    error    TEXT,
    created  REAL NOT NULL,
    started  REAL,
    finished REAL,
    pid      INTEGER,
    host     TEXT
);
CREATE INDEX IF NOT EXISTS runs_study ON runs(study);
"""


class StoreError(ValueError):
    """A user-facing store problem (unknown or ambiguous run id, unreadable database)."""


def default_root() -> Path:
    return Path(os.environ.get("OVERPARAM_STORE") or "runs")


def run_id_for(study: str, config: dict[str, Any], version: int = 1) -> str:
    """A content hash of the resolved config (seed included) and the study's version."""
    blob = json.dumps({"study": study, "version": version, "config": to_jsonable(config)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class RunRecord:
    run_id: str
    study: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    checks: list[dict[str, Any]]
    figures: list[str]
    notes: str
    error: str | None
    created: float
    started: float | None
    finished: float | None
    dir: Path

    @property
    def seconds(self) -> float | None:
        return None if self.started is None or self.finished is None else self.finished - self.started

    @property
    def verdict(self) -> str:
        """'3/4 checks passed' style summary."""
        if not self.checks:
            return "no checks"
        passed = sum(bool(c.get("passed")) for c in self.checks)
        return f"{passed}/{len(self.checks)} checks passed"

    def results(self) -> dict[str, Any]:
        """The results.json document (schema in DESIGN.md)."""
        return {"run_id": self.run_id, "study": self.study, "status": self.status, "config": self.config,
                "metrics": self.metrics, "checks": self.checks, "figures": self.figures, "notes": self.notes,
                "error": self.error, "started": self.started, "finished": self.finished,
                "seconds": self.seconds}


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.db_path = self.root / DB_NAME
        self._conn: sqlite3.Connection | None = None

    # -- database ----------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open run store {self.db_path}: {exc}") from None
            self._conn = conn
            self.recover_stale()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _transaction(self, sql: str, params: tuple) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _record(self, row: sqlite3.Row) -> RunRecord:
        return RunRecord(run_id=row["run_id"], study=row["study"], status=row["status"],
                         config=json.loads(row["config"]), metrics=json.loads(row["metrics"]),
                         checks=json.loads(row["checks"]), figures=json.loads(row["figures"]),
                         notes=row["notes"], error=row["error"], created=row["created"],
                         started=row["started"], finished=row["finished"],
                         dir=self.run_dir(row["study"], row["run_id"]))

    # -- queries -----------------------------------------------------------------------------
    def run_dir(self, study: str, run_id: str) -> Path:
        return self.root / study / run_id

    def exists(self) -> bool:
        return self.db_path.exists()

    def get(self, run_id: str) -> RunRecord | None:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return self._record(row) if row else None

    def resolve(self, prefix: str) -> RunRecord:
        """A run by its id or a unique prefix of it."""
        rows = self.conn.execute("SELECT * FROM runs WHERE run_id LIKE ? ORDER BY created",
                                 (prefix.replace("%", "") + "%",)).fetchall()
        if not rows:
            raise StoreError(f"no run {prefix!r} in {self.root}; `overparam runs` lists them")
        if len(rows) > 1:
            ids = ", ".join(r["run_id"] for r in rows[:5])
            raise StoreError(f"run id prefix {prefix!r} is ambiguous: {ids}")
        return self._record(rows[0])

    def list_runs(self, study: str | None = None) -> list[RunRecord]:
        if study:
            rows = self.conn.execute("SELECT * FROM runs WHERE study = ? ORDER BY created", (study,))
        else:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY created")
        return [self._record(r) for r in rows.fetchall()]

    # -- state changes -----------------------------------------------------------------------
    def begin(self, run_id: str, study: str, config: dict[str, Any]) -> RunRecord:
        """Mark a run as running (new, or again after an interruption) and write its config."""
        folder = self.run_dir(study, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "config.json", config)
        now = time.time()
        self._transaction(
            """INSERT INTO runs (run_id, study, status, config, created, started, pid, host)
               VALUES (?, ?, 'running', ?, ?, ?, ?, ?)
               ON CONFLICT(run_id) DO UPDATE SET status='running', started=excluded.started,
                   finished=NULL, error=NULL, metrics='{}', checks='[]', figures='[]', notes='',
                   pid=excluded.pid, host=excluded.host""",
            (run_id, study, json.dumps(to_jsonable(config)), now, now, os.getpid(), socket.gethostname()))
        record = self.get(run_id)
        write_json(folder / "results.json", record.results())
        return record

    def finish(self, run_id: str, status: str, metrics: dict[str, Any] | None = None,
               checks: list[dict[str, Any]] | None = None, figures: list[str] | None = None,
               notes: str = "", error: str | None = None) -> RunRecord:
        """Record the end of a run: results.json first (atomically), then the row."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"finish() needs a final status, got {status!r}")
        record = self.get(run_id)
        if record is None:
            raise StoreError(f"no run {run_id!r} to finish")
        record.status, record.finished, record.error, record.notes = status, time.time(), error, notes
        record.metrics = to_jsonable(metrics or {})
        record.checks = to_jsonable(checks or [])
        record.figures = list(figures or [])
        write_json(record.dir / "results.json", record.results())
        self._transaction(
            """UPDATE runs SET status=?, metrics=?, checks=?, figures=?, notes=?, error=?, finished=?, pid=NULL
               WHERE run_id=?""",
            (status, json.dumps(record.metrics), json.dumps(record.checks), json.dumps(record.figures),
             notes, error, record.finished, run_id))
        return record

    def recover_stale(self) -> list[str]:
        """Runs left 'running' by a process that no longer exists become 'interrupted'."""
        host = socket.gethostname()
        rows = self._conn.execute("SELECT run_id, pid, host FROM runs WHERE status='running'").fetchall()
        stale = [r["run_id"] for r in rows
                 if r["host"] == host and r["pid"] != os.getpid() and not _pid_alive(r["pid"])]
        for run_id in stale:
            self.finish(run_id, "interrupted", error="the process running it ended without recording a result")
        return stale
