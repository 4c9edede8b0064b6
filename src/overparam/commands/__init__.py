"""Extra CLI commands, one module each, exposing ``NAME``, ``add_parser(subparsers)`` and ``run(args, store) -> int``.

`overparam measure <instrument>` commands live here (``measure_hessian``, ``measure_ntk``, ...);
cli.py discovers them, so adding an instrument's command never edits cli.py.
"""
