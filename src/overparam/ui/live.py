"""What is running now: each running run's progress (from its ``progress.json``), forced re-runs in their
attempt folders, and runs whose process died, which are recorded as interrupted as soon as they are seen."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from overparam.store import RunStore
from overparam.store.runs import _ATTEMPT, PROGRESS_FILE, _pid_alive
from overparam.ui.catalog import Catalog

STALLED_AFTER = 30.0   # seconds without a progress write before a live run is flagged as quiet


def read_progress(path: Path) -> dict[str, Any] | None:
    """A run's progress.json (see overparam.train.progress, which writes it; not imported here: it would bring
    torch into the explorer for one JSON file), or None when there is none yet or it cannot be read."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def progress_view(doc: dict[str, Any] | None, started: float | None, now: float) -> dict[str, Any]:
    """A run's live state for the page: the current stage (step of total, its time left) and the run's elapsed
    time. ``doc`` is the run's progress.json (None before its first write)."""
    view: dict[str, Any] = {"elapsed": None if started is None else max(0.0, now - started)}
    if not doc:
        return view | {"desc": "starting", "step": None, "total": None, "eta": None, "metrics": {}, "quiet_for": None}
    quiet = now - float(doc.get("updated") or now)
    return view | {"desc": str(doc.get("desc", "")), "step": doc.get("step"), "total": doc.get("total"),
                   "bar": doc.get("bar"), "eta": doc.get("eta"), "metrics": doc.get("metrics") or {},
                   "quiet_for": quiet if quiet > STALLED_AFTER else None}


class LiveView:
    """Running runs with their progress. Reading it also records runs of dead processes as interrupted (what
    any store command does when it opens the store), so a run killed outright shows as interrupted."""

    def __init__(self, catalog: Catalog, before_check=None):
        self.catalog = catalog
        self.root = catalog.root
        self.host = socket.gethostname()
        self._before_check = before_check       # reaps the explorer's own finished children first
        self._recover_lock = threading.Lock()

    def _recover(self) -> None:
        with self._recover_lock:
            store = RunStore(self.root)
            try:
                store.conn  # opening the store records every dead process's run as interrupted
            finally:
                store.close()

    def running(self) -> list[dict[str, Any]]:
        if self._before_check is not None:
            self._before_check()
        rows = self.catalog.running()
        if any(r["host"] == self.host and not _pid_alive(r["pid"]) for r in rows):
            self._recover()
            rows = self.catalog.running()
        now = time.time()
        out = []
        for r in rows:
            doc = read_progress(self.root / r["study"] / r["run_id"] / PROGRESS_FILE)
            out.append({"run_id": r["run_id"], "study": r["study"], "attempt": False, "pid": r["pid"],
                        "host": r["host"]} | progress_view(doc, r["started"], now))
        return out + self.attempts(now)

    def attempts(self, now: float) -> list[dict[str, Any]]:
        """Forced re-runs of finished runs: they compute in ``<study>/.<run_id>.attempt-<pid>``, the run's row
        untouched until they finish."""
        out = []
        if not self.root.is_dir():
            return out
        for folder in self.root.glob("*/.*.attempt-*"):
            match = _ATTEMPT.match(folder.name)
            if match is None or not _pid_alive(int(match["pid"])):
                continue
            doc = read_progress(folder / PROGRESS_FILE)
            started = doc.get("started") if doc else _mtime(folder)
            out.append({"run_id": match["run_id"], "study": folder.parent.name, "attempt": True,
                        "pid": int(match["pid"]), "host": self.host} | progress_view(doc, started, now))
        return out

    def of(self, run_id: str) -> dict[str, Any] | None:
        return next((r for r in self.running() if r["run_id"] == run_id), None)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
