"""Machine-readable benchmark output: each benchmark writes ``benchmarks/results/<name>.json``.

The document names the machine, the library versions and the date, so the docs can render a benchmark's table
with its context. Rows are plain dicts (one per measured configuration); ``ratios`` holds the headline numbers
(peer time / overparam time, > 1 means overparam is faster) that ``run_all.py`` prints at the end.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "load_average_1min": load}


def version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_result(name: str, rows: list[dict[str, Any]], ratios: dict[str, float] | None = None,
                 peers: dict[str, str | None] | None = None, notes: str = "") -> Path:
    """Write ``results/<name>.json`` and return its path."""
    RESULTS.mkdir(exist_ok=True)
    doc = {"benchmark": name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "peers": peers or {}, "ratios": ratios or {}, "rows": rows, "notes": notes}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    return path
