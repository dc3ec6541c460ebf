"""``ssaf-dashboard``: the W&B comparison view of a project's ssaf runs, as a saved workspace and a report.

``ssaf-dashboard --entity E --project P`` creates both on the W&B server (network and a W&B login);
``--dry-run`` prints the panels and the keys they read and touches no network; ``--check outputs/``
compares those keys with what the W&B runs under a folder logged (offline runs too): only the keys those
runs could log (their tasks; ``learned_lam/...`` only if one learns lam), exit 0 when all are there, 1
naming any that none logged, 2 when the folder holds no W&B run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssaf import registry
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


def learned_params(transforms: set[str]) -> set[str]:
    """The parameters (lam, alpha) that runs with these ``attn.transform`` values learn, from the registry."""
    records = [registry.TRANSFORMS[t] for t in transforms if t in registry.TRANSFORMS]
    return {r.param for r in records if r.learned and r.param}


def expected(d: Dashboard, logged: LoggedKeys) -> list[Key]:
    """The keys the dashboard reads that the runs found could log: a ``learned_<param>/...`` key only when one
    of them learns that parameter (softmax, sparse and entmax runs never log one)."""
    learned = learned_params(logged.transforms)
    return [k for k in d.referenced() if k.learned is None or k.learned in learned]


def missing(d: Dashboard, logged: LoggedKeys) -> list[Key]:
    """The keys the dashboard reads that the runs could log and none did."""
    where = {"history": logged.history, "summary": logged.summary, "config": logged.config}
    return [k for k in expected(d, logged) if not k.found_in(where[k.source])]


def check(roots: list[Path], conf: Path, tasks: list[str] | None, layers: int, title: str) -> int:
    """``--check``: 0 when the runs under ``roots`` logged every key they could, 1 naming those they did
    not, 2 when there is nothing to check. Without ``tasks``, the tasks of the runs found."""
    logged = LoggedKeys()
    try:
        for root in roots:
            logged.update(read_runs(root))
    except FileNotFoundError as e:
        print(f"ssaf-dashboard --check: {e}", file=sys.stderr)
        return 2
    where = ", ".join(map(str, roots))
    if not logged.runs:
        print(
            f"ssaf-dashboard --check: no W&B runs under {where}: nothing to check (looked for wandb/offline-run-*/ "
            "and wandb/run-*/ folders with a .wandb file). Runs log to W&B with logger=wandb (logger.mode=offline "
            "needs no network; experiment=smoke logs nowhere)",
            file=sys.stderr,
        )
        return 2
    known = {p.stem for p in (conf / "task").glob("*.yaml")}
    d = build(task_metrics(conf, tasks or sorted(logged.tasks & known) or None), layers, title)
    want, gone = expected(d, logged), missing(d, logged)
    for k in gone:
        print(f"not logged by any run: {k.source} {k.name}")
    attns, found = ", ".join(sorted(logged.transforms)) or "unknown", ", ".join(sorted(logged.tasks)) or "unknown"
    print(f"{logged.runs} run(s) under {where} (tasks: {found}; attention: {attns})")
    skipped = len(d.referenced()) - len(want)
    if skipped:
        print(f"{skipped} learned_lam / learned_alpha keys not checked: no run found learns that parameter")
    print(f"{len(want) - len(gone)} of {len(want)} keys these runs could log were found")
    return 1 if gone else 0


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
    ap.add_argument(
        "--check",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="check the keys against the W&B runs under DIR (exit 0: all there, 1: some missing, 2: no runs)",
    )
    ap.add_argument(
        "--tasks", help="comma-separated tasks to include (default: every conf/task/*.yaml; --check: the runs' tasks)"
    )
    ap.add_argument("--layers", type=int, default=6, help="attention layers of the model (MiniLM 6, bert-base 12)")
    ap.add_argument("--compare", nargs="+", type=Path, metavar="DIR", help="add ssaf-compare's tables over DIR")
    ap.add_argument("--title", default="ssaf: sparse attention vs softmax")
    ap.add_argument("--conf", type=Path, help="the Hydra config folder (default: the one ssaf-train reads)")
    a = ap.parse_args(argv)
    names = a.tasks.split(",") if a.tasks else None
    try:
        conf = a.conf or config_dir()
        if a.check:
            return check(a.check, conf, names, a.layers, a.title)
        d = build(task_metrics(conf, names), a.layers, a.title)
    except (ValueError, FileNotFoundError) as e:
        print(f"ssaf-dashboard: {e}", file=sys.stderr)
        return 2
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
