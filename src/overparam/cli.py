"""The `overparam` command: parse, call, print. Usage errors are one line and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from overparam.commands.argtypes import nonneg_int, seed_count, seed_int

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise UsageError(f"{self.prog}: {message}")


STORE_HELP = "run store folder (default ./runs or $OVERPARAM_STORE)"


class _SubParser(_Parser):
    """A subcommand's parser: also takes ``--store`` after the subcommand (``overparam run X --store DIR``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not any(a.dest == "store" for a in self._actions):
            self.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS, help=STORE_HELP)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="overparam", description="A laboratory for the science of over-parameterized networks.")
    p.add_argument("--store", metavar="DIR", help=STORE_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubParser)
    sub.required = True

    s = sub.add_parser("studies", help="list the studies and the papers they reproduce")
    s.add_argument("--json", action="store_true")
    s.add_argument("--keys", metavar="STUDY", help="list one study's config keys, defaults and allowed values")

    r = sub.add_parser("run", help="run one study (reuses a finished run of the same config)", add_help=False)
    r.add_argument("-h", "--help", action="store_true", help="this help; with a STUDY, that study's keys")
    r.add_argument("study", nargs="?")
    r.add_argument("--preset", help="quick (a minute; the default) or paper (the published setup)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable); lists as 1,2,3")
    r.add_argument("--config", metavar="FILE", help="TOML (or JSON) file of config keys")
    r.add_argument("--seed", type=seed_int, help="seed of every random choice")
    r.add_argument("--data-dir", metavar="DIR", help="folder of user data (e.g. MNIST IDX files) for studies that take it")
    r.add_argument("--force", action="store_true", help="rerun even if this config already finished")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    sw = sub.add_parser("sweep", help="run a study over a grid of config values x seeds (resumable)")
    sw.add_argument("study")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="values of one config key (repeatable; the grid is their product)")
    sw.add_argument("--seeds", type=seed_count, default=1, help="seeds 0..N-1 per grid point (default 1)")
    sw.add_argument("--preset", help="quick (the default) or paper")
    sw.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    sw.add_argument("--config", metavar="FILE")
    sw.add_argument("--data-dir", metavar="DIR")
    sw.add_argument("--backend", default="local", help="local (a process pool) or ray")
    sw.add_argument("--address", help="Ray cluster address (default: start a local Ray cluster)")
    sw.add_argument("--workers", type=nonneg_int, help="parallel workers (default: the number of cores)")
    sw.add_argument("--retry-failed", action="store_true", help="rerun points that failed before")
    sw.add_argument("--json", action="store_true")
    sw.add_argument("--quiet", action="store_true")

    ls = sub.add_parser("runs", help="list runs in the store")
    ls.add_argument("--study")
    ls.add_argument("--json", action="store_true")

    sh = sub.add_parser("show", help="show one run (id or unique prefix)")
    sh.add_argument("run")
    sh.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="rewrite the HTML report of a run (or of all runs) and the index")
    rp.add_argument("run", nargs="?")
    rp.add_argument("--redraw", action="store_true",
                    help="draw the run's figures again from its stored arrays (no rerun)")

    t = sub.add_parser("tour", help="run every study and write the index page")
    t.add_argument("--preset", default="quick")
    t.add_argument("--force", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--only", action="append", default=[], metavar="STUDY", help="run only these studies")

    u = sub.add_parser("ui", help="explore the store in the browser: runs, comparisons, sweeps, live progress")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs a token)")
    u.add_argument("--port", type=nonneg_int, default=8765, help="port (default 8765; 0 picks a free one)")
    u.add_argument("--token", help="token every request must carry (default: $OVERPARAM_UI_TOKEN, or a random one "
                                   "when --host is not loopback)")

    commands = _extra_commands()
    if commands:
        m = sub.add_parser("measure", help="measure your own model with an instrument (weights load tensors only)")
        msub = m.add_subparsers(dest="instrument", metavar="INSTRUMENT", parser_class=_SubParser)
        msub.required = True
        for module in commands:
            module.add_parser(msub)
    return p


def _extra_commands() -> list:
    import importlib
    import pkgutil

    import overparam.commands as pkg

    return [importlib.import_module(f"overparam.commands.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)
            if m.name.startswith("measure_")]


def _print_json(obj: Any) -> None:
    from overparam.store import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2))


def _run_summary(record, reused: bool) -> dict[str, Any]:
    return {"run_id": record.run_id, "study": record.study, "status": record.status, "dir": str(record.dir),
            "metrics": record.metrics, "checks": record.checks, "reused": reused, "error": record.error}


def _print_attempt(outcome) -> None:
    """A forced attempt that did not finish: what happened to it, and that the finished run was kept."""
    first = (outcome.attempt_error or "").splitlines()[0] if outcome.attempt_error else ""
    print(f"{outcome.record.study} {outcome.record.run_id}: the new attempt {outcome.attempt_status}"
          + (f" ({first})" if first else "") + f"; the finished run is kept as it was ({outcome.record.verdict})")
    print(f"  report: {outcome.record.dir / 'report.html'}")


def _print_run(record, reused: bool = False) -> None:
    tag = " (finished earlier; --force reruns it)" if reused else ""
    print(f"{record.study} {record.run_id}: {record.status}{tag} · {record.verdict}")
    for c in record.checks:
        mark = "PASS" if c["passed"] else "FAIL"
        print(f"  [{mark}] {c['name']}: expected {c['expected']}; measured {c['measured']}  ({c['source']})")
    if record.error:
        print(f"  error: {record.error.splitlines()[0]}")
    print(f"  report: {record.dir / 'report.html'}")


def cmd_studies(args, store) -> int:
    from overparam.config import describe_config
    from overparam.runner import get_study
    from overparam.studies import REGISTRY

    if args.keys:
        rows = describe_config(get_study(args.keys).config)
        if args.json:
            _print_json(rows)
        else:
            for row in rows:
                print(f"{row['key']:<16} default {row['default']!s:<24} {row['allowed']:<28} {row['help']}")
        return EXIT_OK
    infos = [s.info() for s in REGISTRY.values()]
    if args.json:
        _print_json(infos)
    else:
        for i in infos:
            print(f"{i['name']:<22} {i['description']}\n{'':<22} reproduces: {i['paper']}")
    return EXIT_OK


def cmd_run(args, store) -> int:
    from overparam.config import parse_set
    from overparam.runner import execute, get_study, preset_of, resolve

    if args.help:
        print(_study_help(args.study) if args.study else _build_parser()._subparsers._group_actions[0]
              .choices["run"].format_help())
        return EXIT_OK
    if not args.study:
        raise UsageError("overparam run: give a STUDY (`overparam studies` lists them)")
    study = get_study(args.study)
    preset = preset_of(args.preset, args.config)
    cfg = resolve(study, preset, parse_set(args.sets), args.config, args.seed, args.data_dir)
    outcome = execute(study, cfg, store, force=args.force, quiet=args.quiet or args.json, preset=preset)
    if args.json:
        _print_json(_run_summary(outcome.record, outcome.reused)
                    | {"attempt_status": outcome.attempt_status, "attempt_error": outcome.attempt_error})
    elif outcome.attempt_status:
        _print_attempt(outcome)
    else:
        _print_run(outcome.record, outcome.reused)
    ok = outcome.record.status == "done" and outcome.attempt_status is None
    return EXIT_OK if ok else EXIT_RUN_FAILED


def _study_help(name: str) -> str:
    """A study's description, paper and keys: default, allowed values and each preset's value."""
    from overparam.config import describe_config
    from overparam.runner import get_study

    study = get_study(name)
    rows = describe_config(study.config)
    presets = list(study.presets)
    lines = [f"overparam run {study.name} [--preset {'|'.join(presets)}] [--set KEY=VALUE ...]", "",
             study.description, f"reproduces: {study.paper}", "", "keys (default, then each preset's value):"]
    for row in rows:
        values = "  ".join(f"{p}={study.presets[p][row['key']]!s}" for p in presets if row["key"] in study.presets[p])
        lines.append(f"  {row['key']:<18} {str(row['default']):<14} {row['allowed']}")
        lines.append(f"  {'':<18} {row['help']}" + (f"  [{values}]" if values else ""))
    return "\n".join(lines)


def cmd_sweep(args, store) -> int:
    from overparam.config import parse_set
    from overparam.runner import get_study, preset_of
    from overparam.sweep import expand, parse_grid, run_sweep

    study = get_study(args.study)
    args.preset = preset_of(args.preset, args.config)
    grid = parse_grid(args.grid)
    sets = parse_set(args.sets)
    if args.data_dir is not None:
        sets["data_dir"] = args.data_dir
    points = expand(study, grid, seeds=args.seeds, preset=args.preset, sets=sets, config_file=args.config)
    total = len(points)
    count = [0]

    def on_done(point, rec):
        count[0] += 1
        if not (args.quiet or args.json):
            values = " ".join(f"{k}={v}" for k, v in point.values.items())
            print(f"  [{count[0]}] {values}: {rec.status} · {rec.verdict}", flush=True)

    if not (args.quiet or args.json):
        print(f"sweep {study.name}: {total} points ({args.backend} backend)", flush=True)
    # with --json, stdout carries only the JSON document: anything a backend prints goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        out = run_sweep(study, points, store, backend=args.backend, workers=args.workers, address=args.address,
                        retry_failed=args.retry_failed, grid_keys=list(grid), on_done=on_done, preset=args.preset)
    statuses = [r.status for r in out.records]
    if args.json:
        _print_json({"study": study.name, "sweep_id": out.summary.run_id, "dir": str(out.summary.dir),
                     "points": [{**p.values, "run_id": p.run_id, "status": r.status, "metrics": r.metrics}
                                for p, r in zip(out.points, out.records)],
                     "computed": out.computed, "skipped": out.skipped})
    else:
        print(f"{statuses.count('done')}/{total} done, {out.computed} computed, {out.skipped} reused; "
              f"failed: {statuses.count('failed')}; page: {out.summary.dir / 'report.html'}")
    return EXIT_OK if all(s == "done" for s in statuses) else EXIT_RUN_FAILED


def cmd_runs(args, store) -> int:
    records = store.list_runs(args.study) if store.exists() else []
    current = _current_code({r.study for r in records})
    if args.json:
        _print_json([{"run_id": r.run_id, "study": r.study, "status": r.status, "verdict": r.verdict,
                      "seconds": r.seconds, "dir": str(r.dir), "older_code": r.code != current.get(r.study, r.code)}
                     for r in records])
        return EXIT_OK
    if not records:
        print(f"no runs in {store.root}")
    for r in records:
        secs = "" if r.seconds is None else f"{r.seconds:7.1f}s"
        older = " (made by older code)" if r.code != current.get(r.study, r.code) else ""
        print(f"{r.run_id}  {r.study:<22} {r.status:<12} {secs:>8}  {_live(r) or r.verdict}{older}")
    return EXIT_OK


def _current_code(studies: set[str]) -> dict[str, str]:
    """The code fingerprint of each registered study among ``studies`` (sweeps and diagnoses have none)."""
    from overparam.studies import REGISTRY

    return {name: REGISTRY[name].fingerprint for name in studies if name in REGISTRY}


def _live(record) -> str:
    """How far a running run has got, from its progress.json ('' when it is not running or says nothing)."""
    from overparam.store.runs import PROGRESS_FILE
    from overparam.train.progress import read_progress

    doc = read_progress(record.dir / PROGRESS_FILE) if record.status == "running" else None
    if not doc:
        return ""
    eta = f", about {doc['eta']:.0f} s left" if doc.get("eta") is not None else ""
    return f"{doc['desc']}: {doc['step']}/{doc['total']}{eta}"


def cmd_show(args, store) -> int:
    record = store.resolve(args.run)
    if args.json:
        _print_json(record.results() | {"dir": str(record.dir)})
        return EXIT_OK
    _print_run(record)
    for key, value in record.metrics.items():
        print(f"  {key}: {value}")
    return EXIT_OK


def cmd_report(args, store) -> int:
    from overparam.report import write_index, write_run_report
    from overparam.runner import study_infos

    infos = study_infos()
    records = [store.resolve(args.run)] if args.run else store.list_runs()
    if args.redraw:
        from overparam.runner import redraw

        if not args.run:
            raise UsageError("report --redraw needs a RUN (id or unique prefix)")
        records = [redraw(store, records[0])]
    for record in records:
        path = write_run_report(record, infos.get(record.study))
        if args.run:
            print(path)
    index = write_index(store, infos)
    print(index.resolve())
    return EXIT_OK


def cmd_measure(args, store) -> int:
    from overparam.usermodel import UserModelError

    module = {m.NAME: m for m in _extra_commands()}[args.instrument]
    try:
        return module.run(args, store)
    except UserModelError as exc:
        raise UsageError(str(exc)) from None


def cmd_tour(args, store) -> int:
    from overparam.report import write_index
    from overparam.runner import execute, get_study, resolve, study_infos
    from overparam.studies import REGISTRY

    names = args.only or list(REGISTRY)
    studies = [get_study(n) for n in names]
    configs = [resolve(s, args.preset) for s in studies]  # every config checked before anything runs
    worst = EXIT_OK
    for study, cfg in zip(studies, configs):
        print(f"== {study.name}: {study.description}", flush=True)
        outcome = execute(study, cfg, store, force=args.force, quiet=args.quiet, preset=args.preset)
        if outcome.attempt_status:
            _print_attempt(outcome)
        else:
            _print_run(outcome.record, outcome.reused)
        if outcome.record.status != "done" or outcome.attempt_status:
            worst = EXIT_RUN_FAILED
    index = write_index(store, study_infos())
    print(f"index: {index.resolve()}")
    return worst


def cmd_ui(args, store) -> int:
    from overparam.ui import ServeError, access_token, bind, serve, url_of

    try:
        token = access_token(args.host, args.token)
        sock = bind(args.host, args.port)
    except ServeError as exc:
        raise UsageError(str(exc)) from None
    print(f"overparam ui: {store.root.resolve()} at {url_of(sock, args.host, token)}  "
          f"(Ctrl-C stops it; runs started from it keep running)", flush=True)
    try:
        serve(store.root, sock, token)
    except KeyboardInterrupt:  # uvicorn has shut down on SIGINT/SIGTERM, then passed the signal on: a normal stop
        pass
    return EXIT_OK


COMMANDS = {"studies": cmd_studies, "run": cmd_run, "runs": cmd_runs, "show": cmd_show,
            "report": cmd_report, "tour": cmd_tour, "measure": cmd_measure,
            "sweep": cmd_sweep, "ui": cmd_ui}


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")  # the command line writes figures to files; never a window
    from overparam.config import ConfigError
    from overparam.store import RunStore, StoreError
    from overparam.train.stop import clear_stop, install_signal_handlers

    try:
        args = _build_parser().parse_args(argv)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    # SIGINT and SIGTERM stop the work between steps (overparam.train.stop): a run records itself as
    # interrupted, a finished result being written is written first, and worker processes are ended.
    clear_stop()
    install_signal_handlers()
    store = RunStore(Path(args.store) if args.store else None)
    try:
        return COMMANDS[args.command](args, store)
    except (ConfigError, StoreError, UsageError) as exc:
        print(f"overparam: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"overparam: interrupted{'; ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader (| head) went away: nothing more to say
        sys.stderr.close()
        return EXIT_OK
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
