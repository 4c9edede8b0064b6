"""Run a study into the store: resolve its config, reuse a finished run, record every ending.

This is the only place where a study's result meets the store. Every way a run can end is
recorded: ``done``/``diverged`` with results, ``failed`` with the error, ``interrupted`` on Ctrl-C
or SIGTERM (the exception is re-raised so the caller can exit 130).
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from overparam.config import ConfigError, config_to_dict, fields_of, read_config_file, resolve_config  # noqa: E402
from overparam.report import write_index, write_run_report  # noqa: E402
from overparam.store import RunRecord, RunStore, figure_bytes, run_id_for, save_arrays, save_figure  # noqa: E402
from overparam.studies import REGISTRY, Study  # noqa: E402
from overparam.studies.base import RunContext  # noqa: E402
from overparam.train import Diverged, Progress  # noqa: E402


@dataclass
class Outcome:
    record: RunRecord
    reused: bool


def get_study(name: str) -> Study:
    if name not in REGISTRY:
        raise ConfigError(f"unknown study {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def study_infos() -> dict[str, dict[str, str]]:
    return {name: {"description": s.description, "paper": s.paper} for name, s in REGISTRY.items()}


def resolve(study: Study, preset: str = "quick", sets: dict[str, Any] | None = None,
            config_file: str | None = None, seed: int | None = None, data_dir: str | None = None):
    """A validated config, or ConfigError before anything is written."""
    sets = dict(sets or {})
    if data_dir is not None:
        if "data_dir" not in fields_of(study.config):
            raise ConfigError(f"study {study.name!r} takes no --data-dir (it uses generated data only)")
        sets["data_dir"] = data_dir
    file_values = read_config_file(config_file) if config_file else None
    # The config checks its data keys as it is built (studies.base.check_data_keys): a data_dir must exist,
    # hold the files of the datasets that read it, and be read by one of them -- before the run is recorded.
    return resolve_config(study.config, study.presets, preset, file_values, sets, seed)


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


def compute(study_name: str, config: dict[str, Any], quiet: bool = True) -> Payload:
    """Run a study on a resolved config. Failures become a Payload; Ctrl-C propagates."""
    study = REGISTRY[study_name]
    cfg = study.config(**config)
    try:
        _seed_everything(cfg.seed)
        result = study.run(cfg, RunContext(progress=Progress(enabled=False if quiet else None)))
        # a figure is a matplotlib Figure, or already-rendered files {extension: bytes} (an animated GIF)
        figures = {name: (dict(fig) if isinstance(fig, dict) else figure_bytes(fig))
                   for name, fig in result.figures.items()}
        return Payload(result.status, result.metrics, [c.to_dict() for c in result.checks], result.arrays,
                       figures, result.notes)
    except Diverged as exc:
        return Payload("diverged", error=str(exc) or "training diverged (NaN/inf loss)")
    except Exception as exc:  # recorded, not swallowed: the run's status is "failed" with the error
        return Payload("failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
    finally:
        plt.close("all")


def record(store: RunStore, run_id: str, payload: Payload) -> RunRecord:
    """Write a payload's artifacts into the run's folder, then mark the run finished."""
    folder = store.get(run_id).dir
    if payload.arrays:
        save_arrays(folder / "arrays.npz", payload.arrays)
    files: list[str] = []
    for name, rendered in payload.figures.items():
        files += save_figure(folder, name, rendered)
    return store.finish(run_id, payload.status, payload.metrics, payload.checks, files, payload.notes,
                        payload.error)


INTERRUPTED = "interrupted (Ctrl-C or SIGTERM); run it again to complete it"


def execute(study: Study, cfg: Any, store: RunStore, force: bool = False, quiet: bool = False) -> Outcome:
    config = config_to_dict(cfg)
    run_id = run_id_for(study.name, config, study.version)
    existing = store.get(run_id)
    if existing is not None and existing.status == "done" and not force:
        return Outcome(existing, reused=True)
    store.begin(run_id, study.name, config)
    infos = study_infos()
    try:
        done = record(store, run_id, compute(study.name, config, quiet))
    except KeyboardInterrupt:
        _write_pages(store, store.finish(run_id, "interrupted", error=INTERRUPTED), infos)
        raise
    _write_pages(store, done, infos)
    return Outcome(done, reused=False)


def _write_pages(store: RunStore, record: RunRecord, infos: dict[str, dict[str, str]]) -> None:
    write_run_report(record, infos.get(record.study))
    write_index(store, infos)
