"""Compare runs from their run directories alone: runs (I/O) -> stats (pure) -> tables, plots -> cli."""

from ssaf.report.cli import main, write_report
from ssaf.report.plots import differences
from ssaf.report.runs import Run, find_run_dirs, load_run
from ssaf.report.stats import Group, best_param, group_runs

__all__ = [
    "Group",
    "Run",
    "best_param",
    "differences",
    "find_run_dirs",
    "group_runs",
    "load_run",
    "main",
    "write_report",
]
