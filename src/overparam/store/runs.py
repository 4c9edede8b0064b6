"""The run store: one SQLite database (the index) plus one folder per run (the artifacts).

Layout under the store root (default ``./runs``, or ``--store DIR`` / ``OVERPARAM_STORE``)::

    overparam.db                 runs table: id, study, status, config, metrics, checks, times, error
    <study>/<run-id>/config.json results.json arrays.npz *.png *.svg report.html
    index.html                   written by overparam.report

The database row and ``results.json`` change together at each state change (running -> done,
diverged, failed or interrupted); files are replaced atomically and the row is updated in a
transaction, so a reader never sees a run marked done whose results are half-written. A process
killed outright (SIGKILL) leaves its row ``running``: the next store open finds the dead pid and
marks the run ``interrupted``, with the time it was last seen working (its ``progress.json``).

A finished run (``done`` or ``diverged``) is never modified by a later attempt. ``--force`` computes in
an attempt folder beside it (``<study>/.<run-id>.attempt-<pid>``); only an attempt that finishes
replaces the run, by swapping the folders and then updating the row. An interrupted or failed attempt
leaves the finished run as it was, and its folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overparam.store.files import to_jsonable, write_json

STATUSES = ("running", "done", "diverged", "failed", "interrupted")
FINISHED = ("done", "diverged")   # results a later attempt may replace only by finishing itself
DB_NAME = "overparam.db"
PROGRESS_FILE = "progress.json"
_ATTEMPT = re.compile(r"^\.(?P<run_id>[0-9A-Za-z_-]+)\.attempt-(?P<pid>\d+)$")

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
    host     TEXT,
    preset   TEXT,
    code     TEXT
);
CREATE INDEX IF NOT EXISTS runs_study ON runs(study);
"""


class StoreError(ValueError):
    """A user-facing store problem (unknown or ambiguous run id, unreadable database)."""


def default_root() -> Path:
    return Path(os.environ.get("OVERPARAM_STORE") or "runs")


def run_id_for(study: str, config: dict[str, Any], version: int = 1, code: str = "") -> str:
    """A content hash of the resolved config (seed included), the study's version and its code fingerprint."""
    doc = {"study": study, "version": version, "config": to_jsonable(config)} | ({"code": code} if code else {})
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
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
    preset: str | None = None
    code: str | None = None          # fingerprint of the code that made the run

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
        return {"run_id": self.run_id, "study": self.study, "status": self.status, "preset": self.preset,
                "code": self.code, "config": self.config,
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
                columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
                for column in ("preset", "code"):  # a store written before runs recorded these
                    if column not in columns:
                        conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
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
                         dir=self.run_dir(row["study"], row["run_id"]), preset=row["preset"],
                         code=row["code"])

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

    def is_live(self, record: RunRecord) -> bool:
        """A ``running`` run whose process is still alive (on this host: its pid exists)."""
        if record.status != "running":
            return False
        row = self.conn.execute("SELECT pid, host FROM runs WHERE run_id = ?", (record.run_id,)).fetchone()
        return row is not None and (row["host"] != socket.gethostname() or _pid_alive(row["pid"]))

    # -- state changes -----------------------------------------------------------------------
    def begin(self, run_id: str, study: str, config: dict[str, Any], preset: str | None = None,
              code: str | None = None) -> RunRecord:
        """Mark a run as running (new, or again after an interruption or failure) and write its config.

        The folder of an earlier unfinished attempt is emptied first, so no figure or array of it survives
        beside the new results. A finished run must go through :meth:`begin_attempt` instead."""
        existing = self.get(run_id)
        if existing is not None and existing.status in FINISHED:
            raise StoreError(f"run {run_id} is {existing.status}; a new attempt must not overwrite it in place")
        folder = self.run_dir(study, run_id)
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "config.json", _config_document(config, preset))
        now = time.time()
        self._transaction(
            """INSERT INTO runs (run_id, study, status, config, created, started, pid, host, preset, code)
               VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(run_id) DO UPDATE SET status='running', started=excluded.started,
                   finished=NULL, error=NULL, metrics='{}', checks='[]', figures='[]', notes='',
                   pid=excluded.pid, host=excluded.host, preset=excluded.preset, code=excluded.code""",
            (run_id, study, json.dumps(to_jsonable(config)), now, now, os.getpid(), socket.gethostname(), preset,
             code))
        record = self.get(run_id)
        write_json(folder / "results.json", record.results())
        return record

    def begin_attempt(self, run_id: str, config: dict[str, Any], preset: str | None = None) -> Path:
        """A folder for a new attempt at a finished run, beside it; the run itself is not touched."""
        record = self.get(run_id)
        if record is None:
            raise StoreError(f"no run {run_id!r} to attempt again")
        folder = record.dir.parent / f".{run_id}.attempt-{os.getpid()}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        write_json(folder / "config.json", _config_document(config, preset))
        return folder

    def discard_attempt(self, folder: Path) -> None:
        """Remove an attempt's folder (the attempt was interrupted or failed; the finished run stays)."""
        if _ATTEMPT.match(Path(folder).name):
            shutil.rmtree(folder, ignore_errors=True)

    def finish(self, run_id: str, status: str, metrics: dict[str, Any] | None = None,
               checks: list[dict[str, Any]] | None = None, figures: list[str] | None = None,
               notes: str = "", error: str | None = None, attempt: Path | None = None,
               preset: str | None = None, started: float | None = None,
               finished: float | None = None) -> RunRecord:
        """Record the end of a run: results.json first (atomically), then the row.

        With ``attempt`` (a folder from :meth:`begin_attempt`), the attempt's folder replaces the run's
        folder first: the old folder is moved aside, the attempt moved in, the row updated, the old folder
        removed. A reader sees the old run or the new one, never a mixture."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"finish() needs a final status, got {status!r}")
        record = self.get(run_id)
        if record is None:
            raise StoreError(f"no run {run_id!r} to finish")
        now = time.time()
        if attempt is not None:
            record.started, record.preset = started or now, preset
        record.status, record.finished, record.error, record.notes = status, finished or now, error, notes
        record.metrics = to_jsonable(metrics or {})
        record.checks = to_jsonable(checks or [])
        record.figures = list(figures or [])
        old = None
        if attempt is not None:
            write_json(Path(attempt) / "results.json", record.results())
            old = record.dir.parent / f".{run_id}.replaced-{os.getpid()}"
            if record.dir.exists():
                os.replace(record.dir, old)
            os.replace(attempt, record.dir)
        else:
            write_json(record.dir / "results.json", record.results())
        self._transaction(
            """UPDATE runs SET status=?, metrics=?, checks=?, figures=?, notes=?, error=?, finished=?, pid=NULL,
                   started=?, preset=? WHERE run_id=?""",
            (status, json.dumps(record.metrics), json.dumps(record.checks), json.dumps(record.figures),
             notes, error, record.finished, record.started, record.preset, run_id))
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return record

    def recover_stale(self) -> list[str]:
        """Runs left 'running' by a process that no longer exists become 'interrupted', ended when the run was
        last seen working; attempt folders of dead processes are removed."""
        host = socket.gethostname()
        rows = self._conn.execute("SELECT run_id, pid, host FROM runs WHERE status='running'").fetchall()
        stale = [r["run_id"] for r in rows
                 if r["host"] == host and r["pid"] != os.getpid() and not _pid_alive(r["pid"])]
        for run_id in stale:
            record = self.get(run_id)
            self.finish(run_id, "interrupted", error="the process running it ended without recording a result "
                        "(killed); the run time shown is until it was last seen working",
                        finished=_last_seen(record), preset=record.preset)
        if self.root.is_dir():
            for folder in self.root.glob("*/.*.attempt-*"):
                match = _ATTEMPT.match(folder.name)
                if match and not _pid_alive(int(match["pid"])):
                    shutil.rmtree(folder, ignore_errors=True)
        return stale


def _config_document(config: dict[str, Any], preset: str | None) -> dict[str, Any]:
    """config.json: the resolved config, led by the preset it was resolved from (a config file may name one)."""
    return ({"preset": preset} if preset else {}) | dict(config)


def _last_seen(record: RunRecord) -> float:
    """When a run killed outright was last seen working: its progress file's last write, else its start."""
    try:
        return max(record.started or 0.0, (record.dir / PROGRESS_FILE).stat().st_mtime)
    except OSError:
        return record.started or record.created
