"""A :class:`~ssaf.dashboard.spec.Dashboard` as a W&B saved workspace and a W&B report (``wandb-workspaces``).

Building the objects needs no network; ``save`` does (it posts them to the W&B server).
"""

from __future__ import annotations

from typing import Any

from ssaf.dashboard.spec import Dashboard, Key, Panel


def _imports() -> tuple[Any, Any]:
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as e:
        raise ImportError("ssaf-dashboard needs wandb-workspaces: pip install 'ssaf[dashboard]'") from e
    return wr, ws


def _metric(wr: Any, k: Key) -> Any:
    if k.source == "config":
        return wr.Config(k.name)
    if k.source == "summary":
        return wr.SummaryMetric(k.name)
    return wr.Metric(k.name)


def _column(k: Key) -> str:
    """A runs-table column: W&B addresses nested config values as ``config:<top>.value.<rest>``."""
    if k.source == "config":
        top, _, rest = k.name.partition(".")
        return f"config:{top}.value" + (f".{rest}" if rest else "")
    return f"summary:{k.name}"


def panel(wr: Any, p: Panel) -> Any:
    if p.kind == "line":
        (y,) = p.y
        if y.pattern:  # one line per matching key (per head)
            return wr.LinePlot(title=p.title, metric_regex=y.name)
        return wr.LinePlot(title=p.title, y=[y.name], groupby_aggfunc="mean", groupby_rangefunc="stderr")
    if p.kind == "bar":
        return wr.BarPlot(
            title=p.title,
            metrics=[_metric(wr, k) for k in p.y],
            orientation="v",
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
        )
    if p.kind == "scatter":
        assert p.x is not None
        return wr.ScatterPlot(title=p.title, x=_metric(wr, p.x), y=_metric(wr, p.y[0]))
    return wr.MediaBrowser(title=p.title, media_keys=[k.name for k in p.y], num_columns=1)


def workspace(d: Dashboard, entity: str, project: str) -> Any:
    """The saved workspace: every section, runs grouped by task, attention and lam/alpha, the runs table."""
    wr, ws = _imports()
    return ws.Workspace(
        entity=entity,
        project=project,
        name=d.title,
        sections=[
            ws.Section(name=s.name, panels=[panel(wr, p) for p in s.panels], is_open=s.is_open) for s in d.sections
        ],
        runset_settings=ws.RunsetSettings(
            groupby=[_metric(ws, k) for k in d.group_by],
            pinned_columns=[_column(k) for k in d.columns],
        ),
    )


def report(d: Dashboard, entity: str, project: str, tables: dict[str, str] | None = None) -> Any:
    """The report: per task its panels over the task's runs, grouped by attention and lam/alpha; ``tables``
    (title -> markdown, from ``ssaf-compare``'s tables) are included as they are."""
    wr, _ = _imports()
    group = [f"config.{k.name}" for k in d.group_by if k.name != "task.name"]
    blocks: list[Any] = [
        wr.P(
            "Sparse attention against softmax, made by ssaf-dashboard. Bars: the mean over a group's runs "
            "(seeds) with its standard error; softmax is its own bar, the reference."
        )
    ]
    for title, md in (tables or {}).items():
        blocks += [wr.H2(title), wr.MarkdownBlock(text=md)]
    for task, panels in d.tasks.items():
        runset = wr.Runset(
            entity=entity, project=project, name=task, filters=f"Config('task.name') = '{task}'", groupby=group
        )
        blocks += [wr.H2(task), wr.PanelGrid(runsets=[runset], panels=[panel(wr, p) for p in panels])]
    return wr.Report(entity=entity, project=project, title=d.title, blocks=blocks, width="fluid")


def save(d: Dashboard, entity: str, project: str, tables: dict[str, str] | None = None) -> tuple[str, str]:
    """Create both on the W&B server; returns their URLs."""
    w = workspace(d, entity, project).save()
    r = report(d, entity, project, tables).save()
    return w.url, r.url
