"""Sweeps: expand a grid of config values x seeds, run the points not yet done, aggregate them.

Each grid point is an ordinary run (same run id as `overparam run` with the same config), so a point
finished by a sweep is reused by a later run and vice versa. Workers -- a local process pool or Ray
tasks -- only compute and return a :class:`~overparam.runner.Payload`; the driver alone writes the
store, one point at a time, as each finishes. A sweep killed at any moment (SIGINT or SIGKILL) has
lost no finished point; run again, it skips what is done and computes the rest. A failing point is
recorded with its error and the sweep goes on.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import multiprocessing as mp
import numpy as np

from overparam.config import ConfigError, config_to_dict
from overparam.report import write_index, write_run_report
from overparam.runner import (INTERRUPTED, Payload, compute, record, record_computed, resolve, run_id_of,
                              study_infos)
from overparam.store import RunRecord, RunStore, figure_bytes, run_id_for
from overparam.store.runs import PROGRESS_FILE
from overparam.train.parallel import pin_to_cores, stop_pool, worker_init
from overparam.train.stop import deferred
from overparam.studies import Study

BACKENDS = ("local", "ray")
# Test hook: if this names a file that does not exist, the first worker to see it creates it and dies
# abruptly, as a killed worker would. Used to show that Ray retries a lost task exactly once more.
FAULT_ENV = "OVERPARAM_FAULT_KILL_ONCE"


@dataclass
class SweepPoint:
    values: dict[str, Any]        # the grid values of this point (seed included)
    config: dict[str, Any]        # the resolved config
    run_id: str


@dataclass
class SweepOutcome:
    points: list[SweepPoint]
    records: list[RunRecord]
    computed: int
    skipped: int
    summary: RunRecord


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"--grid expects key=v1,v2,..., got {item!r}")
        if key in grid:
            raise ConfigError(f"--grid key {key!r} given twice")
        grid[key] = _split_values(values)
    return grid


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so list-valued keys can be swept: widths=[8,16],[32,64]."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def expand(study: Study, grid: dict[str, list[str]], seeds: int = 1, preset: str = "quick",
           sets: dict[str, Any] | None = None, config_file: str | None = None, base_seed: int = 0) -> list[SweepPoint]:
    """Every combination of grid values x seeds, each resolved and validated before anything runs."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if "seed" in grid:
        raise ConfigError("sweep seeds with --seeds N, not --grid seed=...")
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        for s in range(base_seed, base_seed + seeds):
            overrides = {**(sets or {}), **dict(zip(keys, combo))}
            cfg = resolve(study, preset, overrides, config_file, seed=s)
            config = config_to_dict(cfg)
            values = {k: config[k] for k in keys} | {"seed": s}
            points.append(SweepPoint(values, config, run_id_of(study, config)))
    return points


def _pending(points: list[SweepPoint], store: RunStore, retry_failed: bool) -> list[SweepPoint]:
    """Points to compute: new, interrupted, or failed with ``retry_failed``; not those another process runs."""
    todo, seen = [], set()
    for p in points:
        if p.run_id in seen:
            continue
        seen.add(p.run_id)
        rec = store.get(p.run_id)
        if rec is not None and store.is_live(rec):
            raise ConfigError(f"point {p.run_id} of this sweep is running in another process; "
                              f"wait for it to end or stop that process first")
        if rec is None or rec.status in ("interrupted", "running") or (rec.status == "failed" and retry_failed):
            todo.append(p)
    return todo


# -- backends: each yields (point, payload) as points finish ------------------------------------------

def _compute_point(study_name: str, config: dict[str, Any], cores: int | None = None,
                   progress_path: str | None = None) -> Payload:
    if cores is not None:  # a Ray task holds one CPU: its training stays on one core
        pin_to_cores(cores)
    fault = os.environ.get(FAULT_ENV)
    if fault and not os.path.exists(fault):
        open(fault, "w").close()
        os._exit(1)  # die like a killed worker: no exception, no result
    return compute(study_name, config, quiet=True, progress_path=progress_path)


def _run_local(study: Study, points: list[SweepPoint], workers: int, on_start: Callable,
               progress_of: Callable[[SweepPoint], str]) -> Iterator:
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
    # worker_init: each worker ends with the driver, even when the driver is killed outright
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init,
                             initargs=(threads,)) as pool:
        queue = list(points)
        running: dict[Future, SweepPoint] = {}
        try:
            while queue or running:
                while queue and len(running) < workers:
                    p = queue.pop(0)
                    on_start(p)
                    running[pool.submit(_compute_point, study.name, p.config, None, progress_of(p))] = p
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    p = running.pop(fut)
                    try:
                        payload = fut.result()
                    except Exception as exc:  # the worker process died: record the point as failed
                        payload = Payload("failed", error=f"worker lost: {type(exc).__name__}: {exc}")
                    yield p, payload
        except BaseException:
            stop_pool(pool, processes=True)
            raise


def _run_ray(study: Study, points: list[SweepPoint], workers: int, address: str | None,
             on_start: Callable, progress_of: Callable[[SweepPoint], str]) -> Iterator:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'overparam[ray]'") from None
    started_here = not ray.is_initialized()
    reaper = None
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": workers}
        if not address:  # a local cluster's processes must not outlive this driver, even if it is killed
            from overparam.reaper import watch_descendants

            reaper = watch_descendants()
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, **kwargs)
    # max_retries: a task whose worker dies is re-run; its result is written once, by the driver.
    task = ray.remote(num_cpus=1, max_retries=3)(_compute_point)
    refs: dict[Any, SweepPoint] = {}
    try:
        for p in points:
            on_start(p)
            refs[task.remote(study.name, p.config, 1, progress_of(p))] = p
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            p = refs.pop(ready[0])
            try:
                payload = ray.get(ready[0])
            except Exception as exc:  # retries exhausted
                payload = Payload("failed", error=f"ray task lost: {type(exc).__name__}: {str(exc)[:300]}")
            yield p, payload
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
        if reaper is not None:
            reaper.terminate()


# -- the driver ---------------------------------------------------------------------------------------

def run_sweep(study: Study, points: list[SweepPoint], store: RunStore, backend: str = "local",
              workers: int | None = None, address: str | None = None, retry_failed: bool = False,
              grid_keys: list[str] | None = None, on_done: Callable[[SweepPoint, RunRecord], None] | None = None,
              preset: str | None = None) -> SweepOutcome:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is not allowed; choose one of: {', '.join(BACKENDS)}")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    todo = _pending(points, store, retry_failed)
    infos = study_infos()
    in_flight: set[str] = set()

    def on_start(p: SweepPoint) -> None:
        with deferred():
            store.begin(p.run_id, study.name, p.config, preset, study.fingerprint)
            in_flight.add(p.run_id)

    def progress_of(p: SweepPoint) -> str:
        return str(store.run_dir(study.name, p.run_id) / PROGRESS_FILE)

    stream = (_run_local(study, todo, min(workers, max(len(todo), 1)), on_start, progress_of) if backend == "local"
              else _run_ray(study, todo, workers, address, on_start, progress_of))
    try:
        for p, payload in stream:
            with deferred():  # a finished point is recorded even if a signal arrives meanwhile
                rec = record(store, p.run_id, payload)
                in_flight.discard(p.run_id)
                write_run_report(rec, infos.get(study.name))
            if on_done:
                on_done(p, rec)
    except BaseException:
        with deferred():
            stream.close()  # stops the workers now, not when the generator is collected
            for run_id in in_flight:
                store.finish(run_id, "interrupted", error=INTERRUPTED)
            write_index(store, infos)
        raise
    records = [store.get(p.run_id) for p in points]
    summary = _summarize(study, points, records, store, grid_keys or [])
    write_index(store, infos | {summary.study: {"description": f"sweep of {study.name}", "paper": study.paper}})
    return SweepOutcome(points, records, computed=len(todo), skipped=len(points) - len(todo), summary=summary)


def _scalar_metrics(records: list[RunRecord]) -> list[str]:
    keys: list[str] = []
    for r in records:
        for k, v in r.metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys:
                keys.append(k)
    return keys


def _summarize(study: Study, points: list[SweepPoint], records: list[RunRecord], store: RunStore,
               grid_keys: list[str]) -> RunRecord:
    """The sweep itself is a record in the store (study '<name>-sweep'): a table and a figure."""
    name = f"{study.name}-sweep"
    run_id = run_id_for(name, {"points": sorted(p.run_id for p in points)})
    metric_keys = _scalar_metrics([r for r in records if r.status == "done"])
    table = []
    for p, r in zip(points, records):
        row = {**p.values, "run_id": p.run_id, "status": r.status,
               "checks": r.verdict} | {k: r.metrics.get(k) for k in metric_keys}
        table.append(row)
    statuses = [r.status for r in records]
    metrics = {"points": len(points), "done": statuses.count("done"), "failed": statuses.count("failed"),
               "diverged": statuses.count("diverged"), "interrupted": statuses.count("interrupted"),
               "grid": grid_keys, "table": table}
    figures = {}
    if metric_keys and grid_keys:
        figures["sweep"] = figure_bytes(_figure(study.name, points, records, grid_keys, metric_keys[:4]))
    payload = Payload("done", metrics, [], {}, figures,
                      notes=f"{metrics['done']}/{len(points)} points done; each links to its own run page.")
    config = {"study": study.name, "grid": grid_keys, "run_ids": [p.run_id for p in points]}
    rec = record_computed(store, run_id, name, config, payload)
    write_run_report(rec, {"description": f"Sweep of {study.name} over {', '.join(grid_keys) or 'seeds'}",
                           "paper": study.paper})
    return rec


def _figure(study_name, points, records, grid_keys, metric_keys):
    import matplotlib.pyplot as plt

    x_key, rest = grid_keys[0], grid_keys[1:]
    fig, axes = plt.subplots(1, len(metric_keys), figsize=(4.2 * len(metric_keys), 3.4), squeeze=False)
    groups: dict[tuple, dict[Any, list[dict]]] = {}
    for p, r in zip(points, records):
        if r.status != "done":
            continue
        label = tuple(str(p.values[k]) for k in rest)
        groups.setdefault(label, {}).setdefault(_plain(p.values[x_key]), []).append(r.metrics)
    for ax, metric in zip(axes[0], metric_keys):
        for label, by_x in groups.items():
            xs = list(by_x)
            vals = [[m.get(metric) for m in by_x[x] if isinstance(m.get(metric), (int, float))] for x in xs]
            mean = [np.mean(v) if v else math.nan for v in vals]
            std = [np.std(v) if v else math.nan for v in vals]
            pos = xs if all(isinstance(x, (int, float)) for x in xs) else list(range(len(xs)))
            ax.errorbar(pos, mean, yerr=std, marker="o", capsize=3,
                        label=", ".join(f"{k}={v}" for k, v in zip(rest, label)) or None)
            if pos is not xs:
                ax.set_xticks(pos, [str(x) for x in xs], rotation=30)
        ax.set_xlabel(x_key)
        ax.set_title(metric, fontsize=10)
        ax.grid(alpha=0.3)
    if rest:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{study_name} sweep (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def _plain(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def elapsed(start: float) -> str:
    return f"{time.perf_counter() - start:.1f} s"
