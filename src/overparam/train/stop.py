"""Stopping long work on request: SIGINT/SIGTERM end training between steps, never inside a store write.

The command line installs :func:`install_signal_handlers`. A signal then sets a process-wide stop flag and,
unless the main thread is inside a :func:`deferred` section (recording a finished result), raises
:class:`Interrupted` in the main thread at once. Work running in other threads (a pool of training jobs) sees
the flag at its next step -- every training loop and every progress bar calls :func:`check_stop` -- so the
whole process winds down within a step, instead of the pool waiting for its jobs to run to their end.
Inside a :func:`deferred` section the signal is only remembered; the section finishes (a finished run is
recorded, not thrown away) and :class:`Interrupted` is raised as it exits.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_STOP = threading.Event()
_DEFERRING = threading.local()
_LOCAL = threading.local()   # .cancel: an Event that stops this thread's work only (a pool of jobs)


class Interrupted(KeyboardInterrupt):
    """Work stopped on request (Ctrl-C, SIGINT or SIGTERM)."""


def stop_requested() -> bool:
    return _STOP.is_set()


def request_stop() -> None:
    _STOP.set()


def clear_stop() -> None:
    """Forget an earlier request (for a long-lived process that starts new work, and for tests)."""
    _STOP.clear()


def check_stop() -> None:
    """Raise :class:`Interrupted` if a stop was requested, for the process or for this thread's pool (cheap:
    call it every step)."""
    if _STOP.is_set() and not getattr(_DEFERRING, "depth", 0):
        raise Interrupted
    cancel = getattr(_LOCAL, "cancel", None)
    if cancel is not None and cancel.is_set():
        raise Interrupted


@contextmanager
def cancelled_by(event: threading.Event) -> Iterator[None]:
    """Work in this thread also stops when ``event`` is set (a pool cancels its other jobs when one fails)."""
    before = getattr(_LOCAL, "cancel", None)
    _LOCAL.cancel = event
    try:
        yield
    finally:
        _LOCAL.cancel = before


@contextmanager
def deferred() -> Iterator[None]:
    """A section a signal must not cut short (writing a result); a stop requested meanwhile is raised after it.

    A stop requested before the section began is not raised again at its end: the section is then part of
    winding down after that stop (recording a run as interrupted)."""
    already = _STOP.is_set()
    _DEFERRING.depth = getattr(_DEFERRING, "depth", 0) + 1
    try:
        yield
    finally:
        _DEFERRING.depth -= 1
    if not _DEFERRING.depth and not already:
        check_stop()


def _on_signal(signum, frame) -> None:
    request_stop()
    if not getattr(_DEFERRING, "depth", 0):  # handlers run in the main thread: its own deferral counts
        raise Interrupted


def _quiet_after_stop(args) -> None:
    """Threads that die while the process winds down after a stop (a pool's feeder, multiprocessing's resource
    sharer) would print tracebacks after the one line the user gets; their exceptions are expected then."""
    if not _STOP.is_set():
        _default_excepthook(args)


_default_excepthook = threading.excepthook


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM request a stop (installed explicitly: a background process inherits SIGINT ignored)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    threading.excepthook = _quiet_after_stop
