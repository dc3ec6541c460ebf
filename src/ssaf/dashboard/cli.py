"""``ssaf-dashboard``: the W&B comparison view of a project's ssaf runs, as a saved workspace and a report.

``ssaf-dashboard --entity E --project P`` creates both on the W&B server (network and a W&B login);
``--dry-run`` prints the panels and the keys they read and touches no network; ``--check outputs/``
compares those keys with what the W&B runs under a folder logged (offline runs too) and exits 1 naming
any that no run logged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssaf.dashboard.logged import LoggedKeys, read_runs
from ssaf.dashboard.spec import Dashboard, Key, TaskMetric, build
from ssaf.settings import config_dir


def task_metrics(conf: Path, names: list[str] | None = None) -> list[TaskMetric]:
    """Each task's headline metric and reported splits, from ``conf/task/*.yaml``."""
    files = {p.stem: p for p in sorted((conf / "task").glob("*.yaml"))}
    if not files:
        raise FileNotFoundError(f"no task configs in {conf / 'task'} (pass --conf, the checkout's conf/ folder)")
    unknown = sorted(set(names or []) - set(files))
    if unknown:
        raise ValueError(f"--tasks: unknown task(s) {', '.join(unknown)}; known: {', '.join(files)}")
    out = []
    for name in names or list(files):
        c: Any = OmegaConf.load(files[name])
        splits = (*c.get("eval_splits", ["validation"]), *c.get("test_splits", []))
        out.append(TaskMetric(c.name, c.get("metric_for_best", "accuracy"), tuple(splits)))
    return out


def missing(d: Dashboard, logged: LoggedKeys) -> list[Key]:
    """The keys the dashboard reads that no run logged."""
    where = {"history": logged.history, "summary": logged.summary, "config": logged.config}
    return [k for k in d.referenced() if not k.found_in(where[k.source])]


def outline(d: Dashboard) -> str:
    """The dashboard in words: sections, panels and the keys each reads."""

    def key(k: Key) -> str:
        return f"{k.source}:{k.name}"

    lines = [f"workspace {d.title!r}", "  grouped by: " + ", ".join(map(key, d.group_by))]
    lines.append("  runs table: " + ", ".join(map(key, d.columns)))
    for s in d.sections:
        lines.append(f"  section {s.name!r}")
        lines += [
            f"    {p.kind:<7} {p.title}: " + ", ".join(map(key, (*p.y, *([p.x] if p.x else [])))) for p in s.panels
        ]
    lines.append(f"report {d.title!r}: per task, its runs grouped by attention and lam/alpha")
    for task, panels in d.tasks.items():
        lines += [f"  {task}: " + "; ".join(p.title for p in panels)]
    lines.append(f"{len(d.referenced())} keys in all; nothing was sent (--dry-run)")
    return "\n".join(lines)


def compare_tables(roots: list[Path]) -> dict[str, str]:
    """``ssaf-compare``'s grid and group table over local run folders, for the report."""
    from ssaf.report.cli import collect
    from ssaf.report.tables import GRID_LEGEND, grid_table, markdown_table

    _, groups, _ = collect(roots)
    return {"Task x attention (ssaf-compare)": GRID_LEGEND + "\n\n" + grid_table(groups),
            "Every group (ssaf-compare)": markdown_table(groups)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ssaf-dashboard", description=__doc__.split("\n\n")[0])
    ap.add_argument("--entity", help="W&B entity (user or team) that owns the project")
    ap.add_argument("--project", default="ssaf", help="W&B project holding the runs (logger.project; default ssaf)")
    ap.add_argument("--dry-run", action="store_true", help="print the panels and their keys; no network")
    ap.add_argument("--json", action="store_true", help="with --dry-run: the whole spec as JSON")
    ap.add_argument("--check", nargs="+", type=Path, metavar="DIR", help="check the keys against runs under DIR")
    ap.add_argument("--tasks", help="comma-separated tasks to include (default: every conf/task/*.yaml)")
    ap.add_argument("--layers", type=int, default=6, help="attention layers of the model (MiniLM 6, bert-base 12)")
    ap.add_argument("--compare", nargs="+", type=Path, metavar="DIR", help="add ssaf-compare's tables over DIR")
    ap.add_argument("--title", default="ssaf: sparse attention vs softmax")
    ap.add_argument("--conf", type=Path, help="the Hydra config folder (default: the one ssaf-train reads)")
    a = ap.parse_args(argv)
    try:
        tasks = task_metrics(a.conf or config_dir(), a.tasks.split(",") if a.tasks else None)
        d = build(tasks, a.layers, a.title)
    except (ValueError, FileNotFoundError) as e:
        print(f"ssaf-dashboard: {e}", file=sys.stderr)
        return 2
    if a.check:
        logged = LoggedKeys()
        for root in a.check:
            logged.update(read_runs(root))
        gone = missing(d, logged)
        for k in gone:
            print(f"not logged by any run: {k.source} {k.name}")
        roots = ", ".join(map(str, a.check))
        print(f"{len(d.referenced()) - len(gone)} of {len(d.referenced())} keys found in the runs under {roots}")
        return 1 if gone else 0
    if a.dry_run:
        print(json.dumps(d.to_dict(), indent=1) if a.json else outline(d))
        return 0
    if not a.entity:
        print(
            "ssaf-dashboard: --entity is required to create the workspace and report (or use --dry-run)",
            file=sys.stderr,
        )
        return 2
    from ssaf.dashboard.wandb_views import save

    tables = compare_tables(a.compare) if a.compare else None
    workspace_url, report_url = save(d, a.entity, a.project, tables)
    print(f"workspace: {workspace_url}\nreport:    {report_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
