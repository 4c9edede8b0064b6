"""A watcher that ends a process's whole tree of descendants when that process dies, even by SIGKILL.

Worker processes overparam starts itself die with their parent (``prctl(PR_SET_PDEATHSIG)``, see
:func:`overparam.train.parallel.die_with_parent`). A local Ray cluster starts processes overparam does not
control (raylet, GCS, agents, task workers); killed outright, the driver leaves some of them running for
minutes. :func:`watch_descendants` starts this module as a small separate process (no torch import) that
notes the driver's descendants twice a second and, once the driver is gone, sends SIGKILL to every one of
them still alive. Linux only (it reads /proc); elsewhere it does nothing.

    python -m overparam.reaper PID
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.5


def _parents() -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int, parents: dict[int, int] | None = None) -> set[int]:
    """Every live process below ``pid``."""
    parents = _parents() if parents is None else parents
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(pid: int) -> None:
    """Watch ``pid``; when it has ended, SIGKILL the descendants it had (and theirs)."""
    me = os.getpid()
    known: set[int] = set()
    while _alive(pid):
        known = (known | descendants(pid)) - {me}
        known = {p for p in known if _alive(p)}
        time.sleep(POLL_SECONDS)
    parents = _parents()
    for victim in set(known) | {d for k in known for d in descendants(k, parents)}:
        if victim != me:
            try:
                os.kill(victim, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def watch_descendants(pid: int | None = None) -> subprocess.Popen | None:
    """Start the watcher for ``pid`` (default: this process); None where /proc is not available."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen([sys.executable, "-m", "overparam.reaper", str(pid or os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own session: a signal to the run's group spares it


if __name__ == "__main__":
    reap(int(sys.argv[1]))
