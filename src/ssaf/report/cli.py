"""``ssaf-compare``: run directories -> report.md, report.html (the same Markdown rendered, plots inline)
and PNG plots.

``ssaf-compare outputs/ multirun/ --out reports/lam`` (or ``python scripts/compare.py ...``) finds every run
directory under the roots, groups completed runs by setting (task, model, pre-training, the data itself and
the training budget) x attention x lam/alpha, aggregates the headline metric and attention sparsity of
every evaluated split over seeds, and writes a task x attention grid, the table of every group and the
plots. Runs that produced no result (failed, interrupted, killed, unreadable, rejected commands) are
listed with the reason, never dropped silently; runs on ssaf's generated demo data are left out unless
``--include-demo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ssaf.report.page import html_page
from ssaf.report.runs import find_run_dirs, load_run
from ssaf.report.stats import best_param, group_runs
from ssaf.report.tables import GRID_LEGEND, grid_table, markdown_table, paper_table, problems_list


def collect(roots: list[Path], include_demo: bool = False) -> tuple[list, list, list]:
    """(every run, the groups of the counted ones, the demo runs left out)."""
    runs = [load_run(d) for d in find_run_dirs(roots)]
    if not runs:
        raise FileNotFoundError(f"no run directories (with metrics.json or .hydra/) under {', '.join(map(str, roots))}")
    demo = [] if include_demo else [r for r in runs if r.demo]
    counted = [r for r in runs if r not in demo]
    return runs, group_runs(counted), demo


def write_report(
    roots: list[Path], out: Path, title: str = "ssaf runs", include_demo: bool = False, paper: bool = False
) -> dict[str, Any]:
    """Write report.md, report.html and the PNGs into ``out``; returns what it found."""
    from ssaf.report.plots import PLOTS

    out.mkdir(parents=True, exist_ok=True)
    runs, groups, demo = collect(roots, include_demo)
    table = markdown_table(groups)
    problems = problems_list(runs, demo)
    plots = [p for p in (plot(groups, out) for plot in PLOTS) if p is not None]
    grid = grid_table(groups)
    md = [f"# {title}", "", f"{len(runs)} runs under {', '.join(map(str, roots))}", ""]
    paper_md = paper_table(groups) if paper else ""
    if paper:
        md += ["## The paper's layout (test accuracy, mean ± std (seeds))", "", paper_md, ""]
    md += ["## Task x attention", "", GRID_LEGEND, "", grid, "", "## Every group", "", table, problems, ""]
    (out / "report.md").write_text("\n".join([*md, *(f"![{p.stem}]({p.name})" for p in plots)]) + "\n")
    (out / "report.html").write_text(html_page("\n".join(md), title, plots))  # the same text, plots inline
    listed = table + ("\n" + problems if problems else "")
    return {"runs": runs, "groups": groups, "plots": plots, "table": listed, "grid": grid, "paper": paper_md}


def main(argv: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; chosen here, not at import, so a notebook keeps its backend
    ap = argparse.ArgumentParser(description="Compare ssaf runs: tables and plots from run directories.")
    ap.add_argument("roots", nargs="+", type=Path, help="folders holding run directories (outputs/, multirun/...)")
    ap.add_argument("--out", type=Path, default=Path("reports/latest"), help="where to write the report")
    ap.add_argument("--title", default="ssaf runs")
    ap.add_argument("--include-demo", action="store_true", help="count runs on ssaf's generated demo data too")
    ap.add_argument("--paper", action="store_true", help="add the SSAF paper's table layout (sentiment sets)")
    ap.add_argument(
        "--best-param",
        metavar="ATTN",
        help="print only the lam/alpha of ATTN's best group (e.g. sparse: the lam a dev sweep chose) and exit",
    )
    args = ap.parse_args(argv)
    try:
        if args.best_param:
            _, groups, _ = collect(args.roots, args.include_demo)
            print(f"{best_param(groups, args.best_param):g}")
            return
        result = write_report(args.roots, args.out, args.title, args.include_demo, args.paper)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"ssaf-compare: {e}") from e
    print(result["table"])
    print(f"\nwrote {args.out / 'report.md'} and {args.out / 'report.html'} ({len(result['plots'])} plots)")
