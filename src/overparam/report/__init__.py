"""Reports: one self-contained HTML page per run and an index of every run in the store."""

from overparam.report.html import render_run, write_index, write_run_report

__all__ = ["render_run", "write_run_report", "write_index"]
