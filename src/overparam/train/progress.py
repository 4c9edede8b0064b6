"""Progress of long work: tqdm bars on a terminal, and a live ``progress.json`` beside a running run.

Every bar's ``update`` is also a point where work stops on request (:mod:`overparam.train.stop`).

A :class:`Progress` is a factory of bars. ``Progress(enabled=False)`` draws nothing; ``Progress(path=...)``
also keeps a small JSON file up to date (at most once a second, replaced atomically) so that other processes
-- the run explorer, ``overparam runs`` -- can show how far a run has got::

    {"desc": "ensemble", "step": 120, "total": 500, "bar": 2, "elapsed": 3.1, "eta": 9.8,
     "updated": 1764780000.0, "started": 1764779990.0, "metrics": {"loss": 0.41}}

``bar`` counts the bars opened so far in this run (a study may train several models one after another).
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from overparam.train.stop import check_stop

WRITE_EVERY = 1.0  # seconds between writes of progress.json


class _Bar:
    """One bar: forwards to tqdm when drawn, and reports to its Progress's file."""

    def __init__(self, owner: "Progress", total: int, desc: str, tqdm_bar=None):
        self.owner, self.total, self.desc, self.n = owner, int(total), desc, 0
        self.metrics: dict[str, Any] = {}
        self.start = time.time()
        self._tqdm = tqdm_bar

    def update(self, n: int = 1) -> None:
        check_stop()  # every loop with a bar stops between steps when SIGINT/SIGTERM asked it to
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        self.owner._report(self)

    def set_postfix(self, **metrics: Any) -> None:
        """Latest numbers of the work (e.g. loss=0.41), shown on the bar and in progress.json."""
        self.metrics.update(metrics)
        if self._tqdm is not None:
            self._tqdm.set_postfix(**metrics, refresh=False)
        self.owner._report(self)

    def set_postfix_str(self, s: str) -> None:
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(s)


class Progress:
    """A factory of progress bars; ``Progress(enabled=False)`` draws nothing, ``path=`` also writes a file."""

    def __init__(self, enabled: bool | None = None, path: str | Path | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.path = Path(path) if path is not None else None
        self.bars_opened = 0
        self._last_write = 0.0
        self.run_started = time.time()

    @contextmanager
    def bar(self, total: int, desc: str) -> Iterator[_Bar]:
        self.bars_opened += 1
        if not self.enabled:
            bar = _Bar(self, total, desc)
            self._report(bar, force=True)
            yield bar
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr) as t:
            bar = _Bar(self, total, desc, t)
            self._report(bar, force=True)
            yield bar

    def _report(self, bar: _Bar, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.time()
        if not force and now - self._last_write < WRITE_EVERY and bar.n < bar.total:
            return
        self._last_write = now
        elapsed = now - bar.start
        rate = bar.n / elapsed if elapsed > 0 and bar.n > 0 else None
        eta = (bar.total - bar.n) / rate if rate and bar.total >= bar.n else None
        doc = {"desc": bar.desc, "step": bar.n, "total": bar.total, "bar": self.bars_opened,
               "elapsed": round(elapsed, 3), "eta": None if eta is None else round(eta, 3),
               "updated": now, "started": self.run_started, "pid": os.getpid(), "metrics": bar.metrics}
        try:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc, default=float))
            os.replace(tmp, self.path)
        except OSError:  # progress is a courtesy: a full disk or a removed folder must not fail the run
            pass


def read_progress(path: str | Path) -> dict[str, Any] | None:
    """The last progress.json written at ``path``, or None if there is none (or it is unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


SILENT = Progress(enabled=False)
