"""Run store: SQLite index + one folder per run, atomic writes, content-hashed run ids."""

from overparam.store.files import (atomic_write_text, figure_bytes, save_arrays, save_figure, to_jsonable,
                                   write_json)
from overparam.store.runs import STATUSES, RunRecord, RunStore, StoreError, default_root, run_id_for

__all__ = ["RunStore", "RunRecord", "StoreError", "STATUSES", "default_root", "run_id_for",
           "atomic_write_text", "figure_bytes", "save_arrays", "save_figure", "to_jsonable", "write_json"]
