"""Run a study into the store: resolve its config, reuse a finished run, record every ending.

This is the only place where a study's result meets the store. Every way a run can end is
recorded: ``done``/``diverged`` with results, ``failed`` with the error, ``interrupted`` on Ctrl-C
or SIGTERM (the exception is re-raised so the caller can exit 130).
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from overparam.data import DataError, check_source  # noqa: E402
from overparam.config import ConfigError, config_to_dict, fields_of, read_config_file, resolve_config  # noqa: E402
from overparam.report import write_index, write_run_report  # noqa: E402
from overparam.store import RunRecord, RunStore, run_id_for, save_arrays, save_figure  # noqa: E402
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
    cfg = resolve_config(study.config, study.presets, preset, file_values, sets, seed)
    if getattr(cfg, "data_dir", ""):  # user files must be there before the run is recorded
        try:
            check_source(getattr(cfg, "dataset", "npz"), cfg.data_dir)
        except DataError as exc:
            raise ConfigError(str(exc)) from None
    return cfg


def _seed_everything(seed: int) -> None:
    """A safety net: studies use explicit generators, but library code may touch the global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def execute(study: Study, cfg: Any, store: RunStore, force: bool = False, quiet: bool = False) -> Outcome:
    config = config_to_dict(cfg)
    run_id = run_id_for(study.name, config, study.version)
    existing = store.get(run_id)
    if existing is not None and existing.status == "done" and not force:
        return Outcome(existing, reused=True)
    store.begin(run_id, study.name, config)
    infos = study_infos()
    figures: list[str] = []
    try:
        _seed_everything(cfg.seed)
        result = study.run(cfg, RunContext(progress=Progress(enabled=None if not quiet else False)))
        record = store.get(run_id)
        if result.arrays:
            save_arrays(record.dir / "arrays.npz", result.arrays)
        for name, fig in result.figures.items():
            figures += save_figure(record.dir, name, fig)
            plt.close(fig)
        record = store.finish(run_id, result.status, result.metrics, [c.to_dict() for c in result.checks],
                              figures, notes=result.notes)
    except Diverged as exc:
        record = store.finish(run_id, "diverged", error=str(exc) or "training diverged (NaN/inf loss)")
    except KeyboardInterrupt:
        record = store.finish(run_id, "interrupted", error="interrupted (Ctrl-C or SIGTERM); run it again to complete it")
        _write_pages(store, record, infos)
        raise
    except Exception as exc:  # recorded, not swallowed: the caller sees status "failed" and the error
        tb = traceback.format_exc(limit=-3)
        record = store.finish(run_id, "failed", error=f"{type(exc).__name__}: {exc}\n{tb}")
    finally:
        plt.close("all")
    _write_pages(store, record, infos)
    return Outcome(record, reused=False)


def _write_pages(store: RunStore, record: RunRecord, infos: dict[str, dict[str, str]]) -> None:
    write_run_report(record, infos.get(record.study))
    write_index(store, infos)
