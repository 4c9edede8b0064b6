"""Run a study into the store: resolve its config, reuse a finished run, record every ending.

This is the only place where a study's result meets the store. Every way a run can end is
recorded: ``done``/``diverged`` with results, ``failed`` with the error, ``interrupted`` on Ctrl-C
or SIGTERM (the exception is re-raised so the caller can exit 130). Recording is a deferred section
(:func:`overparam.train.stop.deferred`): a signal that arrives while a finished result is being written
waits until it is written. A finished run is replaced only by an attempt that finishes (see
:mod:`overparam.store.runs`).
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from overparam.config import ConfigError, config_to_dict, fields_of, read_config_file, resolve_config
from overparam.report import write_index, write_run_report
from overparam.store import RunRecord, RunStore, figure_bytes, run_id_for, save_arrays, save_figure
from overparam.store.runs import FINISHED, PROGRESS_FILE, StoreError
from overparam.studies import REGISTRY, Study
from overparam.studies.base import RunContext
from overparam.train import Diverged, Progress
from overparam.train.parallel import torch_threads
from overparam.train.stop import Interrupted, deferred


@dataclass
class Outcome:
    """How ``execute`` ended: the run's record, whether it was reused, and, when a forced attempt did not
    finish, that attempt's ending (``record`` is then the finished run that was kept)."""

    record: RunRecord
    reused: bool
    attempt_status: str | None = None
    attempt_error: str | None = None


def get_study(name: str) -> Study:
    if name not in REGISTRY:
        raise ConfigError(f"unknown study {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def run_id_of(study: Study, config: dict[str, Any]) -> str:
    """The run id of ``config``: its hash with the study's version and the fingerprint of its code."""
    return run_id_for(study.name, config, study.version, study.fingerprint)


def study_infos() -> dict[str, dict[str, str]]:
    return {name: {"description": s.description, "paper": s.paper} for name, s in REGISTRY.items()}


def resolve(study: Study, preset: str | None = "quick", sets: dict[str, Any] | None = None,
            config_file: str | None = None, seed: int | None = None, data_dir: str | None = None):
    """A validated config, or ConfigError before anything is written.

    A config file may name its preset (``preset = "paper"``, as every run's config.json does); ``preset=None``
    takes that one, else ``quick``."""
    sets = dict(sets or {})
    if data_dir is not None:
        if "data_dir" not in fields_of(study.config):
            raise ConfigError(f"study {study.name!r} takes no --data-dir (it uses generated data only)")
        sets["data_dir"] = data_dir
    file_values = read_config_file(config_file) if config_file else None
    file_preset = (file_values or {}).pop("preset", None)
    preset = preset or (str(file_preset) if file_preset is not None else "quick")
    # The config checks its data keys as it is built (studies.base.check_data_keys): a data_dir must exist,
    # hold the files of the datasets that read it, and be read by one of them -- before the run is recorded.
    return resolve_config(study.config, study.presets, preset, file_values, sets, seed)


def preset_of(preset: str | None, config_file: str | None) -> str:
    """The preset a run resolves from: the one given, else the config file's ``preset`` key, else ``quick``."""
    if preset:
        return preset
    named = read_config_file(config_file).get("preset") if config_file else None
    return str(named) if named is not None else "quick"


def _seed_everything(seed: int) -> None:
    """A safety net: studies use explicit generators, but library code may touch the global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Payload:
    """Everything needed to record a finished computation, as plain picklable data.

    Workers (a process pool, Ray) return a Payload; only the driver writes it to the store.
    """

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, dict[str, bytes]] = field(default_factory=dict)
    notes: str = ""
    error: str | None = None


def compute(study_name: str, config: dict[str, Any], quiet: bool = True, progress_path=None) -> Payload:
    """Run a study on a resolved config. Failures become a Payload; Ctrl-C propagates.

    ``progress_path``: where to keep the run's live ``progress.json`` (see :mod:`overparam.train.progress`)."""
    import matplotlib.pyplot as plt

    study = REGISTRY[study_name]
    cfg = study.config(**config)
    try:
        _seed_everything(cfg.seed)
        progress = Progress(enabled=False if quiet else None, path=progress_path)
        with torch_threads(study.threads):
            result = study.run(cfg, RunContext(progress=progress))
        return Payload(result.status, result.metrics, [c.to_dict() for c in result.checks], result.arrays,
                       render_figures(study, result.arrays, cfg, result.figures), result.notes)
    except Diverged as exc:
        return Payload("diverged", error=str(exc) or "training diverged (NaN/inf loss)")
    except Exception as exc:  # recorded, not swallowed: the run's status is "failed" with the error
        return Payload("failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
    finally:
        plt.close("all")


def render_figures(study: Study, arrays: dict[str, Any], cfg: Any, drawn: dict[str, Any] | None = None
                   ) -> dict[str, dict[str, bytes]]:
    """The study's figures as files {name: {extension: bytes}}: drawn by ``study.figures(arrays, cfg)``, or the
    figures a study without one returned. A figure is a matplotlib Figure, or already-rendered files
    {extension: bytes} (an animated GIF)."""
    figures = study.figures(arrays, cfg) if study.figures is not None else (drawn or {})
    return {name: (dict(fig) if isinstance(fig, dict) else figure_bytes(fig)) for name, fig in figures.items()}


def redraw(store: RunStore, record: RunRecord) -> RunRecord:
    """Draw a finished run's figures again from its stored arrays and config, without rerunning it."""
    import matplotlib.pyplot as plt

    study = get_study(record.study)
    if study.figures is None:
        raise ConfigError(f"study {study.name!r} draws its figures during the run; rerun it with --force instead")
    if record.status != "done":
        raise ConfigError(f"run {record.run_id} is {record.status}; only a finished run can be redrawn")
    arrays: dict[str, Any] = {}
    if (record.dir / "arrays.npz").is_file():
        with np.load(record.dir / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    config = {k: v for k, v in record.config.items() if k != "preset"}
    try:
        rendered = render_figures(study, arrays, study.config(**config))
    finally:
        plt.close("all")
    files: list[str] = []
    with deferred():
        for name, data in rendered.items():
            files += save_figure(record.dir, name, data)
        for stale in set(record.figures) - set(files):
            (record.dir / stale).unlink(missing_ok=True)
        done = store.finish(record.run_id, record.status, record.metrics, record.checks, files, record.notes,
                            record.error, finished=record.finished)
        _write_pages(store, done, study_infos())
    return done


def record(store: RunStore, run_id: str, payload: Payload, attempt=None, preset: str | None = None,
           started: float | None = None) -> RunRecord:
    """Write a payload's artifacts into the run's folder (or its attempt's folder), then mark the run finished."""
    folder = attempt if attempt is not None else store.get(run_id).dir
    (folder / PROGRESS_FILE).unlink(missing_ok=True)
    if payload.arrays:
        save_arrays(folder / "arrays.npz", payload.arrays)
    files: list[str] = []
    for name, rendered in payload.figures.items():
        files += save_figure(folder, name, rendered)
    return store.finish(run_id, payload.status, payload.metrics, payload.checks, files, payload.notes,
                        payload.error, attempt=attempt, preset=preset, started=started)


INTERRUPTED = "interrupted (Ctrl-C or SIGTERM); run it again to complete it"


def record_computed(store: RunStore, run_id: str, study_name: str, config: dict[str, Any], payload: Payload,
                    preset: str | None = None) -> RunRecord:
    """Record a payload computed outside :func:`execute` (a sweep's summary): a finished earlier version is
    replaced whole, through an attempt folder, like a forced rerun."""
    existing = store.get(run_id)
    with deferred():
        if existing is not None and existing.status in FINISHED:
            attempt = store.begin_attempt(run_id, config, preset)
            return record(store, run_id, payload, attempt, preset)
        store.begin(run_id, study_name, config, preset)
        return record(store, run_id, payload)


def execute(study: Study, cfg: Any, store: RunStore, force: bool = False, quiet: bool = False,
            preset: str | None = None) -> Outcome:
    """Run ``cfg`` into the store, or reuse its finished run (``force`` computes it again).

    A run already finished is never modified by the new attempt unless that attempt finishes: it is computed
    in a folder beside the run and swapped in at the end; interrupted or failed, it is discarded and the
    outcome says so (``attempt_status``)."""
    config = config_to_dict(cfg)
    run_id = run_id_of(study, config)
    existing = store.get(run_id)
    if existing is not None and store.is_live(existing):
        raise StoreError(f"run {run_id} ({study.name}) is already running in another process; "
                         f"wait for it to end or stop that process first")
    if existing is not None and existing.status == "done" and not force:
        return Outcome(existing, reused=True)
    infos = study_infos()
    started = time.time()
    attempt = None
    try:
        with deferred():  # begun completely, or not at all
            if existing is not None and existing.status in FINISHED:
                attempt = store.begin_attempt(run_id, config, preset)
            else:
                store.begin(run_id, study.name, config, preset, study.fingerprint)
        folder = attempt if attempt is not None else store.run_dir(study.name, run_id)
        payload = compute(study.name, config, quiet, progress_path=folder / PROGRESS_FILE)
    except KeyboardInterrupt as exc:
        with deferred():
            if attempt is not None:
                store.discard_attempt(attempt)
                why = f"the new attempt was discarded; the finished run {run_id} is kept as it was"
            else:
                _write_pages(store, store.finish(run_id, "interrupted", error=INTERRUPTED), infos)
                why = f"run {run_id} is recorded as interrupted; the same command completes it"
        raise Interrupted(why) from exc
    with deferred():  # a result that exists is recorded even if a signal arrives now
        if attempt is not None and payload.status not in FINISHED:
            store.discard_attempt(attempt)
            return Outcome(existing, reused=False, attempt_status=payload.status, attempt_error=payload.error)
        done = record(store, run_id, payload, attempt, preset, started)
        _write_pages(store, done, infos)
    return Outcome(done, reused=False)


def _write_pages(store: RunStore, record: RunRecord, infos: dict[str, dict[str, str]]) -> None:
    write_run_report(record, infos.get(record.study))
    write_index(store, infos)
