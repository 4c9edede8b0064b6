"""The `overparam` command: parse, call, print. Usage errors are one line and exit status 2."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise UsageError(f"{self.prog}: {message}")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="overparam", description="A laboratory for the science of over-parameterized networks.")
    p.add_argument("--store", metavar="DIR", help="run store folder (default ./runs or $OVERPARAM_STORE)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("studies", help="list the studies and the papers they reproduce")
    s.add_argument("--json", action="store_true")
    s.add_argument("--keys", metavar="STUDY", help="list one study's config keys, defaults and allowed values")

    r = sub.add_parser("run", help="run one study (reuses a finished run of the same config)")
    r.add_argument("study")
    r.add_argument("--preset", default="quick", help="quick (a minute) or paper (the published setup)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable); lists as 1,2,3")
    r.add_argument("--config", metavar="FILE", help="TOML (or JSON) file of config keys")
    r.add_argument("--seed", type=_nonneg_int, help="seed of every random choice")
    r.add_argument("--data-dir", metavar="DIR", help="folder of user data (e.g. MNIST IDX files) for studies that take it")
    r.add_argument("--force", action="store_true", help="rerun even if this config already finished")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    ls = sub.add_parser("runs", help="list runs in the store")
    ls.add_argument("--study")
    ls.add_argument("--json", action="store_true")

    sh = sub.add_parser("show", help="show one run (id or unique prefix)")
    sh.add_argument("run")
    sh.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="rewrite the HTML report of a run (or of all runs) and the index")
    rp.add_argument("run", nargs="?")

    t = sub.add_parser("tour", help="run every study and write the index page")
    t.add_argument("--preset", default="quick")
    t.add_argument("--force", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--only", action="append", default=[], metavar="STUDY", help="run only these studies")

    commands = _extra_commands()
    if commands:
        m = sub.add_parser("measure", help="measure your own model with an instrument (weights load tensors only)")
        msub = m.add_subparsers(dest="instrument", metavar="INSTRUMENT", parser_class=_Parser)
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


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _print_json(obj: Any) -> None:
    from overparam.store import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2))


def _run_summary(record, reused: bool) -> dict[str, Any]:
    return {"run_id": record.run_id, "study": record.study, "status": record.status, "dir": str(record.dir),
            "metrics": record.metrics, "checks": record.checks, "reused": reused, "error": record.error}


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
    from overparam.runner import execute, get_study, resolve

    study = get_study(args.study)
    cfg = resolve(study, args.preset, parse_set(args.sets), args.config, args.seed, args.data_dir)
    outcome = execute(study, cfg, store, force=args.force, quiet=args.quiet or args.json)
    if args.json:
        _print_json(_run_summary(outcome.record, outcome.reused))
    else:
        _print_run(outcome.record, outcome.reused)
    return EXIT_OK if outcome.record.status == "done" else EXIT_RUN_FAILED


def cmd_runs(args, store) -> int:
    records = store.list_runs(args.study) if store.exists() else []
    if args.json:
        _print_json([{"run_id": r.run_id, "study": r.study, "status": r.status, "verdict": r.verdict,
                      "seconds": r.seconds, "dir": str(r.dir)} for r in records])
        return EXIT_OK
    if not records:
        print(f"no runs in {store.root}")
    for r in records:
        secs = "" if r.seconds is None else f"{r.seconds:7.1f}s"
        print(f"{r.run_id}  {r.study:<22} {r.status:<12} {secs:>8}  {r.verdict}")
    return EXIT_OK


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
        outcome = execute(study, cfg, store, force=args.force, quiet=args.quiet)
        _print_run(outcome.record, outcome.reused)
        if outcome.record.status != "done":
            worst = EXIT_RUN_FAILED
    index = write_index(store, study_infos())
    print(f"index: {index.resolve()}")
    return worst


COMMANDS = {"studies": cmd_studies, "run": cmd_run, "runs": cmd_runs, "show": cmd_show,
            "report": cmd_report, "tour": cmd_tour, "measure": cmd_measure}


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from overparam.config import ConfigError
    from overparam.store import RunStore, StoreError

    try:
        args = _build_parser().parse_args(argv)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    # Ctrl-C and SIGTERM both become KeyboardInterrupt, so a run records itself as interrupted.
    # (SIGINT is installed explicitly: a process started in the background inherits it ignored.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    store = RunStore(Path(args.store) if args.store else None)
    try:
        return COMMANDS[args.command](args, store)
    except (ConfigError, StoreError, UsageError) as exc:
        print(f"overparam: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("overparam: interrupted; the run is recorded as interrupted and will complete when run again",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
