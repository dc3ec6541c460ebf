"""The W&B comparison view as data: which panels, over which logged keys, grouped how.

Pure data, no wandb imports: ``ssaf-dashboard --dry-run`` prints it, ``ssaf.dashboard.wandb_views`` turns it
into a saved workspace and a report, and the dashboard test checks every :class:`Key` against what a real
run logged. Every name comes from ``ssaf.keys``, the functions the trainer and the trackers log with.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from ssaf import keys

Source = Literal["history", "summary", "config"]

# What a comparison groups by and what the runs table shows (W&B config keys, dotted as W&B flattens them).
GROUP_BY = ("task.name", "attn.name", "attn.lam", "attn.alpha")
RUN_COLUMNS = (
    "task.name",
    "attn.name",
    "attn.lam",
    "attn.alpha",
    "seed",
    "run_info.data.source",
    "model.name",
    "trainer.epochs",
    "trainer.max_steps",
    "trainer.max_train_samples",
)


@dataclass(frozen=True)
class Key:
    """A logged key a panel reads: a history metric (per step), a summary value (the selected checkpoint's
    final metrics, ``keys.final``) or a config value. ``pattern``: ``name`` is a regular expression over
    logged names (per-head panels, whose head count depends on the model). ``learned``: the learned parameter
    (``lam`` or ``alpha``) a run's attention must learn to log this key; None for keys every run logs."""

    source: Source
    name: str
    pattern: bool = False
    learned: str | None = None

    def found_in(self, logged: set[str]) -> bool:
        if self.pattern:
            return any(re.fullmatch(self.name, k) for k in logged)
        # an image or table is logged as a nested value: attention_heatmap/_type, attention_heatmap/path, ...
        return self.name in logged or any(k.startswith(self.name + "/") for k in logged)


@dataclass(frozen=True)
class Panel:
    """One chart. ``line``: ``y`` history keys against the step; ``bar``: ``y`` summary values, one bar per
    group (mean with the standard error over the group's runs, i.e. over seeds); ``scatter``: one point per
    run, ``x`` a config key; ``media``: images logged under ``y``."""

    kind: Literal["line", "bar", "scatter", "media"]
    title: str
    y: tuple[Key, ...]
    x: Key | None = None


@dataclass(frozen=True)
class Section:
    name: str
    panels: tuple[Panel, ...]
    is_open: bool = False


@dataclass(frozen=True)
class TaskMetric:
    """A task's headline metric on the splits it is reported on (``conf/task/<name>.yaml``)."""

    task: str
    metric: str  # accuracy | f1
    splits: tuple[str, ...]  # eval splits, then test splits

    def key(self, split: str) -> Key:
        return Key("summary", keys.final(keys.metric(split, self.metric)))


@dataclass(frozen=True)
class Dashboard:
    """The saved workspace (``sections``) and, per task, the report's panels (``tasks``)."""

    title: str
    group_by: tuple[Key, ...]
    columns: tuple[Key, ...]
    sections: tuple[Section, ...]
    tasks: dict[str, tuple[Panel, ...]] = field(default_factory=dict)

    def referenced(self) -> list[Key]:
        """Every key any panel, group or column refers to (each once)."""
        found = [*self.group_by, *self.columns]
        for panels in [s.panels for s in self.sections] + list(self.tasks.values()):
            for p in panels:
                found += [*p.y, *([p.x] if p.x else [])]
        return list(dict.fromkeys(found))

    def to_dict(self) -> dict:
        return asdict(self)


def headline_panels(t: TaskMetric) -> tuple[Panel, ...]:
    """A task's headline metric per attention and lam (bars with error bars over seeds; softmax is its own
    bar, the reference) and against lam (a point per run)."""
    bars = Panel("bar", f"{t.task}: {t.metric} (mean ± s.e. over seeds)", tuple(t.key(s) for s in t.splits))
    lam = Panel("scatter", f"{t.task}: {t.metric} against lam", (t.key(t.splits[0]),), x=Key("config", "attn.lam"))
    return bars, lam


def sparsity_panels(split: str) -> tuple[Panel, ...]:
    """Attention statistics averaged over layers and heads, per group."""
    p = keys.prefix(split)
    return tuple(
        Panel(
            "bar",
            f"{split}: attention {stat.replace('_', ' ')} (mean over layers and heads)",
            (Key("summary", keys.final(keys.stat_mean(p, stat))),),
        )
        for stat in keys.STATS
    )


def per_head_panels(split: str, layers: int) -> tuple[Panel, ...]:
    """Each statistic of each layer, one line per head, over training."""
    p = keys.prefix(split)
    return tuple(
        Panel(
            "line",
            f"{split}: {stat.replace('_', ' ')}, layer {layer} (one line per head)",
            (Key("history", re.escape(keys.head_stat(p, stat, layer, "")) + r"\d+", pattern=True),),
        )
        for stat in keys.STATS
        for layer in range(layers)
    )


def learned_panels(layers: int) -> tuple[Panel, ...]:
    return tuple(
        Panel(
            "line",
            f"learned {name} per head, layer {layer}",
            (Key("history", re.escape(keys.learned(name, layer, "")) + r"\d+", pattern=True, learned=name),),
        )
        for name in keys.LEARNED
        for layer in range(layers)
    )


def curve_panels(tasks: list[TaskMetric]) -> tuple[Panel, ...]:
    train = tuple(Panel("line", f"train {k.replace('_', ' ')}", (Key("history", k),)) for k in keys.TRAIN)
    evals: dict[str, Panel] = {}
    for t in tasks:
        split = t.splits[0]
        for name in (t.metric, "loss"):
            k = keys.metric(split, name)
            evals.setdefault(k, Panel("line", f"{split} {name} during training", (Key("history", k),)))
    return train + tuple(evals.values())


def build(tasks: list[TaskMetric], layers: int, title: str = "ssaf: sparse attention vs softmax") -> Dashboard:
    """The dashboard for runs of ``tasks`` on a model with ``layers`` attention layers."""
    if not tasks:
        raise ValueError("no tasks to build a dashboard for")
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    splits = list(dict.fromkeys(t.splits[0] for t in tasks))  # the checkpoint-selecting splits (MNLI: matched)
    headline = tuple(p for t in tasks for p in headline_panels(t))
    sections = (
        Section("Headline metric by attention and lam", headline, is_open=True),
        Section("Attention sparsity", tuple(p for s in splits for p in sparsity_panels(s)), is_open=True),
        Section("Attention per layer and head", tuple(p for s in splits for p in per_head_panels(s, layers))),
        Section("Learned alpha / lam per head", learned_panels(layers)),
        Section("Training and evaluation curves", curve_panels(tasks)),
        Section(
            "Attention heatmaps", (Panel("media", "attention on a fixed example", (Key("history", keys.HEATMAP),)),)
        ),
    )
    columns = tuple(Key("config", c) for c in RUN_COLUMNS) + tuple(
        dict.fromkeys(t.key(s) for t in tasks for s in t.splits)
    )
    report = {t.task: (*headline_panels(t), *sparsity_panels(t.splits[0])) for t in tasks}
    return Dashboard(title, tuple(Key("config", g) for g in GROUP_BY), columns, sections, report)
