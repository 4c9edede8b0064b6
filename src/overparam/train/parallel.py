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
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import torch

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
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_threaded_torch():
    """torch's intra-op threads set to 1 inside the block, restored after."""
    return torch_threads(1)


def pin_to_cores(cores: int) -> None:
    """Keep this worker (process) within ``cores`` cores: torch's threads, and ``$OVERPARAM_CORES`` for
    any parallelism of its own."""
    torch.set_num_threads(cores)
    os.environ[CORES_ENV] = str(cores)


def run_jobs(jobs: Sequence[Callable[[], T]], workers: int = 1, costs: Sequence[float] | None = None,
             processes: bool = False, on_done: Callable[[int], None] | None = None) -> list[T]:
    """Results of ``jobs`` (in their order), run by ``workers`` threads (or processes) with one torch thread each.

    ``costs`` (estimated work per job) lets the largest jobs start first, which shortens the
    longest worker's queue (longest-processing-time-first scheduling). Threads start at once but share
    the GIL: jobs whose steps are mostly Python overhead (small networks) barely overlap. Processes
    (``processes=True``; jobs must then be picklable, e.g. ``functools.partial`` of a module-level
    function) cost a second or two to start and overlap fully. ``on_done(i)`` is called as job i finishes.
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
                                   initializer=pin_to_cores, initargs=(1,))
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="overparam")
    with single_threaded_torch(), pool:
        futures = {pool.submit(jobs[i]): i for i in order}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_done is not None:
                on_done(futures[future])
    return results
