"""Use every core for independent trainings: torch's intra-op threads, Python threads or worker processes.

One stacked ensemble's ops (batched matmuls over R replicas) are big enough to split across cores, so
:func:`overparam.train.train_ensemble` gives one ensemble all its cores (``torch_threads``). Separate
trainings run side by side in a few Python threads or worker processes, one torch thread each
(``run_jobs``): PyTorch releases the GIL inside its kernels, so each Python thread keeps one core busy
while it is in them (small networks' steps are mostly Python, so they barely overlap); worker processes
overlap fully but cost a second or two to start. Jobs are independent, so results do not depend on how
many workers ran them.

``OVERPARAM_CORES`` caps the workers (a sweep's worker processes set it to their share of the cores).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import torch

from overparam.train.stop import cancelled_by

T = TypeVar("T")
CORES_ENV = "OVERPARAM_CORES"


_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Ask glibc to recycle freed blocks instead of returning them to the OS (once per process).

    By default glibc serves blocks above ~128 KB with fresh ``mmap`` pages and unmaps them on free,
    so every activation of a stacked ensemble (R x batch x width floats, often ~1 MB) costs page faults
    and zeroing on each step: about 1 ms of a 5 ms step for 32 MLPs of width 64. Raising the mmap and
    trim thresholds keeps such blocks in the heap (the process then holds its peak memory). A no-op
    where glibc's ``mallopt`` is not available.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def available_cores() -> int:
    """Cores this process may use: ``$OVERPARAM_CORES`` if set, else the machine's cores."""
    value = os.environ.get(CORES_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"{CORES_ENV} must be a positive integer, got {value!r}") from None
    return max(1, os.cpu_count() or 1)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block (``None``: left as they are), restored after.

    Small models run faster on one thread (per-op overhead dominates).
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ThreadTuner:
    """Runs a repeated step on ``n`` or on 1 torch thread, whichever the last timing found faster.

    On idle cores a stacked ensemble's step is ~1.5x faster on 2 threads than on 1; on a busy machine
    torch's threads wait on each other at every op and the same step gets ~3x *slower* than on 1 thread.
    So the tuner times ``window`` steps on each setting (after ``window`` warm-up steps) and keeps the
    faster, and measures again every ``every`` steps in case the load changed. Results do not depend on
    the thread count (tests/test_train_parallel.py). Use it as a context (it restores torch's thread
    count on exit) and wrap step i in ``with tuner.step(i): ...``.
    """

    def __init__(self, n: int, window: int = 8, every: int = 400, clock: Callable[[], float] = time.perf_counter):
        self.n, self.window, self.every, self.clock = max(1, int(n)), window, every, clock
        self.choice = self.n
        self.seconds = {self.n: 0.0, 1: 0.0}
        self.history: list[int] = []   # the choice after each measurement

    def __enter__(self) -> "ThreadTuner":
        self._before = torch.get_num_threads()
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self._before)

    def _threads_for(self, i: int) -> int | None:
        """The thread count step i must time on (None: not a timed step)."""
        phase = i % self.every
        if phase < self.window:
            return None                   # warm-up (first window) or the settled choice
        if phase < 2 * self.window:
            return self.n
        if phase < 3 * self.window:
            return 1
        return None

    @contextmanager
    def step(self, i: int) -> Iterator[None]:
        if self.n == 1:
            yield
            return
        timed = self._threads_for(i)
        torch.set_num_threads(timed or (self.n if i < self.window else self.choice))
        start = self.clock()
        try:
            yield
        finally:
            if timed is not None:
                self.seconds[timed] += self.clock() - start
                if i % self.every == 3 * self.window - 1:   # both settings timed: choose
                    self.choice = self.n if self.seconds[self.n] <= self.seconds[1] else 1
                    self.history.append(self.choice)
                    self.seconds = {self.n: 0.0, 1: 0.0}


def pin_to_cores(cores: int) -> None:
    """Keep this worker (process) within ``cores`` cores: torch's threads, and ``$OVERPARAM_CORES`` for
    any parallelism of its own."""
    torch.set_num_threads(cores)
    os.environ[CORES_ENV] = str(cores)


def die_with_parent() -> None:
    """Make this worker process end when the process that started it ends, even by SIGKILL or the OOM killer.

    On Linux the kernel delivers SIGKILL through ``prctl(PR_SET_PDEATHSIG)``; elsewhere (and as a second
    line) a daemon thread polls the parent's pid once a second. Without this, a killed run's workers would
    keep training for nobody, holding their memory.
    """
    parent = os.getppid()
    try:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="overparam-parent-watch", daemon=True).start()


def worker_init(cores: int) -> None:
    """Initializer of every worker process overparam starts: pinned to ``cores`` and bound to its parent.

    SIGINT is ignored in workers: Ctrl-C reaches the whole process group, and the parent, which owns the
    run's record, stops them itself (a worker's own KeyboardInterrupt would only break the pool)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    pin_to_cores(cores)


def _in_pool(job: Callable[[], T], cancel: threading.Event) -> T:
    with cancelled_by(cancel):
        return job()


def stop_pool(pool, processes: bool, cancel: threading.Event | None = None) -> None:
    """Cancel what has not started and end a pool without waiting for running jobs.

    Worker processes are terminated. Worker threads cannot be, so ``cancel`` is set: every training loop
    checks :func:`overparam.train.stop.check_stop` between steps, and the threads' jobs end within a step."""
    if cancel is not None:
        cancel.set()
    procs = list((getattr(pool, "_processes", None) or {}).values()) if processes else []  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


def run_jobs(jobs: Sequence[Callable[[], T]], workers: int = 1, costs: Sequence[float] | None = None,
             processes: bool = False, on_done: Callable[[int], None] | None = None) -> list[T]:
    """Results of ``jobs`` (in their order), run by ``workers`` threads (or processes) with one torch thread each.

    ``costs`` (estimated work per job) lets the largest jobs start first, which shortens the
    longest worker's queue (longest-processing-time-first scheduling). Threads start at once but share
    the GIL: jobs whose steps are mostly Python overhead (small networks) barely overlap. Processes
    (``processes=True``; jobs must then be picklable, e.g. ``functools.partial`` of a module-level
    function) cost a second or two to start and overlap fully. ``on_done(i)`` is called as job i finishes.
    An exception or an interruption stops the other jobs at once (see :func:`stop_pool`).
    """
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        results = []
        for i, job in enumerate(jobs):
            results.append(job())
            if on_done is not None:
                on_done(i)
        return results
    order = sorted(range(len(jobs)), key=lambda i: -(costs[i] if costs is not None else 0.0))
    results: list = [None] * len(jobs)
    if processes:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                   initializer=worker_init, initargs=(1,))
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="overparam")
    cancel = threading.Event()
    with torch_threads(1):
        try:
            futures = {(pool.submit(jobs[i]) if processes else pool.submit(_in_pool, jobs[i], cancel)): i
                       for i in order}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_done is not None:
                    on_done(futures[future])
        except BaseException:
            stop_pool(pool, processes, cancel)
            raise
        pool.shutdown(wait=True)
    return results
