"""Start and cancel runs from the explorer, through the same command line a user types.

A start request is validated in this process with the runner's own functions (:func:`overparam.runner.resolve`,
:func:`overparam.sweep.expand`), so a bad value gets the very line ``overparam run`` would print, and nothing is
started. A valid request is then run as ``python -m overparam.cli --store ROOT run ...`` (or ``sweep ...``) in a
process of its own session: it is an ordinary run of the store, not a child of the page. It keeps running when
the explorer stops (a sweep of an hour outlives closing a browser tab or the server), Ctrl-C in the explorer's
terminal does not reach it, and any explorer or ``kill`` can cancel it later. Its output goes to
``ROOT/.ui/launches/``.

Cancelling sends SIGTERM to the process recorded in the run's row (or in its attempt folder's name), after
checking that the process is on this host and is an overparam command: the run stops within a training step
and records itself as ``interrupted`` (:mod:`overparam.train.stop`). A sweep runs its points in one driver
process, so cancelling one of its points stops the sweep; the reply lists every run that stops with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import overparam
from overparam.commands.argtypes import nonneg_int, positive_int
from overparam.config import config_to_dict, parse_set
from overparam.store.runs import _pid_alive
from overparam.ui.catalog import Catalog
from overparam.ui.live import LiveView

KEEP_LOGS = 50


class ActionError(ValueError):
    """A request that cannot be carried out: one line, and the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _lines(value: Any, what: str) -> list[str]:
    """KEY=VALUE items given as a list of strings or as text with one per line."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ActionError(f"{what}: expected text with one key=value per line")
    return [v.strip() for v in value if v.strip()]


def _number(parse, value: Any, what: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return parse(str(value).strip())
    except Exception as exc:  # argparse.ArgumentTypeError: the CLI's own words
        raise ActionError(f"{what}: {exc}") from None


@dataclass
class Launch:
    """A process this explorer started: what for, and how it ended (None while it runs)."""

    pid: int
    kind: str
    study: str
    run_ids: list[str]
    log: Path
    started: float
    process: subprocess.Popen
    returncode: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "kind": self.kind, "study": self.study, "run_ids": self.run_ids,
                "started": self.started, "returncode": self.returncode, "log_tail": self.log_tail()}

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


class Launcher:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.root = catalog.root
        self.log_dir = self.root / ".ui" / "launches"
        self.launches: list[Launch] = []
        self._lock = threading.Lock()
        self.live = LiveView(catalog, before_check=self.reap)

    # -- start ---------------------------------------------------------------------------------------------
    def start(self, body: Any) -> dict[str, Any]:
        """Validate a start request ({kind: run|sweep, study, preset, sets, seed, force, grid, seeds}) and start
        it; returns what was started, or that the run had already finished."""
        from overparam.runner import get_study, preset_of  # the studies (and torch): only when starting runs

        if not isinstance(body, dict):
            raise ActionError("expected a JSON object {kind, study, preset, sets, ...}")
        kind = body.get("kind", "run")
        if kind not in ("run", "sweep"):
            raise ActionError(f"kind: {kind!r} is not allowed; choose run or sweep")
        study_name = body.get("study")
        if not isinstance(study_name, str) or not study_name:
            raise ActionError("study: choose a study")
        study = get_study(study_name)
        preset = body.get("preset") or None
        if preset is not None and not isinstance(preset, str):
            raise ActionError("preset: expected a preset name")
        preset = preset_of(preset, None)
        set_lines = _lines(body.get("sets"), "sets")
        sets = parse_set(set_lines)
        if kind == "run":
            return self._start_run(study, preset, sets, set_lines, _number(nonneg_int, body.get("seed"), "seed"),
                                   bool(body.get("force")))
        grid_lines = _lines(body.get("grid"), "grid")
        if not grid_lines:
            raise ActionError("grid: give at least one key=v1,v2,... line (seeds alone: a run with --seed)")
        seeds = _number(positive_int, body.get("seeds"), "seeds") or 1
        return self._start_sweep(study, preset, sets, set_lines, grid_lines, seeds)

    def _start_run(self, study, preset, sets, set_lines, seed, force) -> dict[str, Any]:
        from overparam.runner import resolve, run_id_of

        cfg = resolve(study, preset, sets, None, seed)  # ConfigError: the CLI's line
        run_id = run_id_of(study, config_to_dict(cfg))
        status = self.catalog.status_of([run_id]).get(run_id)
        if status == "running" and self.live.of(run_id) is not None:
            raise ActionError(f"run {run_id} ({study.name}) is already running in another process; "
                              f"wait for it to end or cancel it", status=409)
        if status == "done" and not force:
            return {"kind": "run", "run_id": run_id, "study": study.name, "reused": True,
                    "message": f"run {run_id} finished earlier with this config; tick 'force' to run it again"}
        args = ["run", study.name, "--preset", preset, *(f"--set={line}" for line in set_lines), "--quiet"]
        args += (["--seed", str(seed)] if seed is not None else []) + (["--force"] if force else [])
        launch = self._spawn(args, "run", study.name, [run_id])
        return {"kind": "run", "run_id": run_id, "study": study.name, "reused": False, "pid": launch.pid}

    def _start_sweep(self, study, preset, sets, set_lines, grid_lines, seeds) -> dict[str, Any]:
        from overparam.sweep import expand, parse_grid

        grid = parse_grid(grid_lines)
        points = expand(study, grid, seeds=seeds, preset=preset, sets=sets)  # every point validated
        run_ids = list(dict.fromkeys(p.run_id for p in points))
        live = {r["run_id"] for r in self.live.running()}
        if live & set(run_ids):
            busy = sorted(live & set(run_ids))[0]
            raise ActionError(f"point {busy} of this sweep is running in another process; "
                              f"wait for it to end or cancel it", status=409)
        args = ["sweep", study.name, "--preset", preset, *(f"--grid={line}" for line in grid_lines),
                "--seeds", str(seeds), *(f"--set={line}" for line in set_lines), "--quiet"]
        launch = self._spawn(args, "sweep", study.name, run_ids)
        return {"kind": "sweep", "run_ids": run_ids, "study": study.name, "reused": False, "pid": launch.pid,
                "grid": list(grid)}

    def _spawn(self, args: list[str], kind: str, study: str, run_ids: list[str]) -> Launch:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._prune_logs()
        started = time.time()
        log = self.log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{study}-{run_ids[0]}.log"
        env = dict(os.environ)
        # the same overparam as this process, even when it is imported from a source tree
        package_parent = str(Path(overparam.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "overparam.cli", "--store", str(self.root.resolve()), *args]
        with open(log, "wb") as out:
            out.write(("$ " + " ".join(cmd) + "\n").encode())
            out.flush()
            process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True, close_fds=True)
        launch = Launch(process.pid, kind, study, run_ids, log, started, process)
        with self._lock:
            self.launches.append(launch)
        return launch

    def _prune_logs(self) -> None:
        logs = sorted(self.log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
        for old in logs[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)

    def reap(self) -> None:
        """Collect the exit status of finished children (a killed child must not linger as a zombie, whose pid
        would still look alive)."""
        with self._lock:
            for launch in self.launches:
                if launch.returncode is None:
                    launch.returncode = launch.process.poll()

    def launch_of(self, run_id: str) -> Launch | None:
        self.reap()
        with self._lock:
            return next((l for l in reversed(self.launches) if run_id in l.run_ids), None)

    # -- cancel --------------------------------------------------------------------------------------------
    def cancel(self, run_id: str) -> dict[str, Any]:
        """SIGTERM to the process running ``run_id`` (it records the run as interrupted within a step)."""
        running = [r for r in self.live.running() if r["run_id"] == run_id]
        if not running:
            launch = self.launch_of(run_id)
            if launch is not None and launch.returncode is None and not self.catalog.status_of([run_id]):
                launch.process.terminate()  # started here and not yet recorded: nothing to record
                return {"run_id": run_id, "pid": launch.pid, "stops": [run_id]}
            status = self.catalog.status_of([run_id]).get(run_id)
            if status is None:
                raise ActionError(f"no run {run_id!r} in {self.root}", status=404)
            raise ActionError(f"run {run_id} is {status}; only a running run can be cancelled", status=409)
        live = running[0]
        pid, host = live["pid"], live["host"]
        if host != socket.gethostname():
            raise ActionError(f"run {run_id} runs on host {host}; cancel it there (SIGTERM to process {pid})",
                              status=409)
        if not _is_overparam(pid):
            raise ActionError(f"process {pid} of run {run_id} is not an overparam command; it was not signalled",
                              status=409)
        os.kill(pid, signal.SIGTERM)
        stops = sorted({r["run_id"] for r in self.live.running() if r["pid"] == pid})
        return {"run_id": run_id, "pid": pid, "stops": stops or [run_id]}


def _is_overparam(pid: int) -> bool:
    """Whether ``pid`` is an overparam command (a recycled pid may now be anything); True where /proc is
    missing, since the row's pid and host are then all there is to go by."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return b"overparam" in cmdline
