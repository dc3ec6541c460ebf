"""The report's tables, as Markdown: the task x attention grid, every group, the paper's layout, and the
runs that produced no result."""

from __future__ import annotations

import math
from collections import defaultdict

from ssaf.report.runs import Run, Setting
from ssaf.report.stats import (
    UNTESTED,
    Group,
    ambiguous_settings,
    beyond_two_std,
    difference,
    paired_t,
    softmax_baselines,
    unit_scale,
)

GRID_LEGEND = (
    "Headline metric, mean ± std over seeds (number of seeds); `*`: beyond 2 std of softmax on the same row; "
    "empty: not run. Columns are attentions with their lam/alpha; zero fractions and times are in the table "
    "below."
)


def fmt(mean: float, std: float, n: int, scale: float = 1.0, digits: int = 2) -> str:
    if n == 0:
        return "-"
    s = f"{mean * scale:.{digits}f}"
    return s + (f" ± {std * scale:.{digits}f}" if n > 1 else "")


def versus(g: Group, base: Group | None, split: str | None = None) -> str:
    """``g``'s mean minus the softmax baseline's, marked n.s. when smaller than 2 std of either group."""
    if base is None or base is g or (d := difference(g, base, split)) is None:
        return "-"
    diff, _, seeds = d
    text = f"{diff * unit_scale(g):+.2f}"
    if seeds < 2:
        return f"{text} ({UNTESTED})"
    return text + (" (> 2 std)" if beyond_two_std(d) else " (n.s.)")


def setting_label(s: Setting, ambiguous: set[tuple[str, str, bool]], budget: bool = True) -> str:
    """The task, with its data and budget when the same task ran on several (``budget=False``: a table with
    a budget column of its own)."""
    if (s.task, s.model, s.pretrained) not in ambiguous:
        return s.task
    return f"{s.task} ({s.budget}; data {s.data})" if budget else f"{s.task} (data {s.data})"


def grid_table(groups: list[Group]) -> str:
    """The task x attention matrix: a row per setting and evaluation split, a column per attention (and
    lam/alpha), each cell the headline metric's mean ± std with the number of seeds; ``*`` marks a
    difference to the row's softmax beyond 2 std. An empty cell is a combination that was not run."""

    def column(g: Group) -> tuple:  # softmax first, then SSAF by lam, then the rest by name
        return (g.attn != "softmax", g.attn != "sparse", g.attn, -math.inf if g.param is None else g.param)

    columns = sorted({column(g) for g in groups})
    names = [f"{c[2]}" + ("" if c[3] == -math.inf else f" {c[3]:g}") for c in columns]
    baselines = softmax_baselines(groups)
    ambiguous = ambiguous_settings(groups)
    rows: dict[tuple, dict[tuple, str]] = defaultdict(dict)
    for g in groups:
        for split in g.first.splits:
            mean, std, n = g.stat("metric", split)
            if n == 0:
                continue
            cell = f"{fmt(mean, std, n, scale=unit_scale(g))} ({n})"
            base = baselines.get(g.setting)
            if base is not None and base is not g and (d := difference(g, base, split)) and beyond_two_std(d):
                cell += " *"
            rows[(g.setting, g.first.metric_name(split))][column(g)] = cell
    lines = [
        "| task | model | pre-trained | metric | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for (setting, metric), cells in rows.items():
        lines.append(
            f"| {setting_label(setting, ambiguous)} | {setting.model} | {'yes' if setting.pretrained else 'no'} | "
            f"{metric} | " + " | ".join(cells.get(c, "") for c in columns) + " |"
        )
    return "\n".join(lines)


def markdown_table(groups: list[Group]) -> str:
    """Every group and split: mean ± std, n, the difference to softmax, the zero fraction, the time."""
    lines = [
        "| task | model | pre-trained | training | attention | lam/alpha | metric | mean ± std | n | vs softmax "
        "| paired t (p) | zero fraction | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    baselines = softmax_baselines(groups)
    ambiguous = ambiguous_settings(groups)
    for g in groups:
        s = g.setting
        base = baselines.get(s)
        for split in g.first.splits:  # one row per evaluated split: dev and test, matched and mismatched
            t = paired_t(g, base, split) if base is not None and base is not g else None
            lines.append(
                f"| {setting_label(s, ambiguous, budget=False)} | {s.model} | {'yes' if s.pretrained else 'no'} | "
                f"{s.budget} | "
                f"{g.attn} | {'-' if g.param is None else g.param} | {g.first.metric_name(split)} | "
                f"{fmt(*g.stat('metric', split), scale=unit_scale(g))} | {g.stat('metric', split)[2]} | "
                f"{versus(g, base, split)} | {'-' if t is None else f'{t[1]:.3f} ({t[2]} pairs)'} | "
                f"{fmt(*g.stat('zero_fraction', split), digits=3)} | {fmt(*g.stat('seconds_per_epoch'), digits=0)} |"
            )
    return "\n".join(lines)


def problems_list(runs: list[Run], demo: list[Run]) -> str:
    """The runs that are not in the tables, and why: duplicates, failed, unreadable, rejected, demo."""
    lines = []
    duplicates = [r for r in runs if r.status == "duplicate"]
    if duplicates:
        lines += ["", f"**{len(duplicates)} duplicate run(s)** (not counted):", ""]
        lines += [f"- `{r.path}` ({r.s.task}, {r.s.attn.label}, seed {r.seed}): {r.error}" for r in duplicates]
    bad = [r for r in runs if r.status not in ("completed", "duplicate", "rejected")]
    if bad:
        lines += ["", f"**{len(bad)} run(s) without results** (not in the table):", ""]
        for r in bad:
            what = f" ({r.s.task}, {r.s.attn.label}, seed {r.seed})" if r.summary else ""
            lines.append(f"- `{r.path}`{what}: {r.status}: {r.error[:200]}")
    rejected = [r for r in runs if r.status == "rejected"]
    if rejected:
        lines += ["", f"**{len(rejected)} rejected command(s)** (failed validation, nothing ran):", ""]
        lines += [f"- `{r.path}`: {r.error.removeprefix('the command was rejected: ')[:200]}" for r in rejected]
    if demo:
        lines += [
            "",
            f"{len(demo)} run(s) on ssaf's generated demo data left out (`--include-demo` shows them): "
            + ", ".join(f"`{r.path}`" for r in demo[:5])
            + (" ..." if len(demo) > 5 else ""),
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the paper's layout

PAPER_COLUMNS = {  # ssaf task -> the SSAF paper's column
    "sst5": "SST-1",
    "sst2_sentences": "SST-2",
    "semeval": "SemEval",
    "sentube_auto": "SenTube-A",
    "sentube_tablets": "SenTube-T",
}
# Test accuracies quoted from the SSAN paper's Table 2 (Ambartsoumian & Popowich, WASSA 2018; baselines from
# Barnes et al., 2017), as in docs/RESULTS.md and ../shared/data/README.md.
SSAN_BASELINES = {
    "BoW (Barnes et al., 2017)": {
        "sst5": 40.3,
        "sst2_sentences": 80.7,
        "sentube_auto": 60.6,
        "sentube_tablets": 66.0,
        "semeval": 65.5,
    },
    "1-layer SSAN + RPR (Ambartsoumian & Popowich, 2018)": {
        "sst5": 48.1,
        "sst2_sentences": 84.2,
        "sentube_auto": 62.5,
        "sentube_tablets": 68.4,
        "semeval": 72.2,
    },
}


def paper_table(groups: list[Group], split: str = "test") -> str:
    """The SSAF paper's layout: rows SSAN baselines, softmax fine-tuning, SSAF, Np, SSAF (Np); a column per
    dataset; test accuracy mean ± std (seeds), SSAF at the lam its dev sweep chose (in brackets)."""
    by_task: dict[tuple[str, bool], list[Group]] = defaultdict(list)
    for g in groups:
        if g.task in PAPER_COLUMNS:
            by_task[(g.task, g.pretrained)].append(g)
    header = "| | " + " | ".join(PAPER_COLUMNS.values()) + " |"
    lines = [header, "|---|" + "---|" * len(PAPER_COLUMNS)]
    for name, values in SSAN_BASELINES.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[t]:.1f}" for t in PAPER_COLUMNS) + " |")
    for label, pretrained, attn in [
        ("Fine-tuning, softmax", True, "softmax"),
        ("SSAF (lam chosen on dev)", True, "sparse"),
        ("Np: no pre-training, softmax", False, "softmax"),
        ("SSAF (Np)", False, "sparse"),
    ]:
        cells = []
        for task in PAPER_COLUMNS:
            cells.append(_paper_cell(by_task.get((task, pretrained), []), attn, split))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paper_cell(groups: list[Group], attn: str, split: str) -> str:
    candidates = [g for g in groups if g.attn == attn]
    if not candidates:
        return ""
    if attn == "sparse":
        # The lam the protocol ran with all seeds (the sweep ran one per lam): the group with the most seeds,
        # and among those the best mean on dev (the selection split), never on the split reported here.
        most = max(len(g.runs) for g in candidates)
        best = max((g for g in candidates if len(g.runs) == most), key=lambda g: g.stat("metric")[0])
        mean, std, n = best.stat("metric", split)
        base = next((g for g in groups if g.attn == "softmax" and g.setting == best.setting), None)
        mark = ""
        if base is not None and (d := difference(best, base, split)) and beyond_two_std(d):
            mark = " *"
        return f"{fmt(mean, std, n, scale=unit_scale(best))} ({n}) [lam {best.param:g}]{mark}" if n else ""
    g = max(candidates, key=lambda g: len(g.runs))
    mean, std, n = g.stat("metric", split)
    return f"{fmt(mean, std, n, scale=unit_scale(g))} ({n})" if n else ""
