"""Compare runs from their run directories alone: group, aggregate over seeds, tables and plots.

``ssaf-compare outputs/ multirun/ --out reports/lam`` (or ``python scripts/compare.py ...``) finds every
run directory under the roots (a folder with ``.hydra/config.yaml``), groups runs by task x model x
attention x parameters, aggregates the headline metric and attention sparsity of every evaluation split
(MNLI matched and mismatched, dev and test) and the time per epoch over seeds (mean, std, n), and writes
``report.md`` and a self-contained ``report.html`` (a task x attention grid, the table of every group) with
PNG plots. Runs without ``metrics.json`` (crashed or still running) or that failed are listed, never
silently skipped.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from omegaconf import OmegaConf

HEADLINE = {"classification": "accuracy", "qa": "f1"}
GRID_LEGEND = (
    "Headline metric, mean ± std over seeds (number of seeds); `*`: beyond 2 std of softmax on the same row; "
    "empty: not run. Columns are attentions with their lam/alpha; zero fractions and times are in the table "
    "below."
)


@dataclass
class Run:
    path: Path
    task: str
    attn: str
    transform: str
    lam: float
    alpha: float
    model: str
    pretrained: bool
    seed: int
    status: str  # completed | failed | missing
    setup: str = ""  # the training budget: every cap, so differently sized runs never share a row
    headline: str = "accuracy"  # the metric the task is judged by (accuracy, or F1 for QA)
    splits: list[str] = field(default_factory=lambda: ["validation"])  # evaluated splits, selection split first
    metrics: dict[str, float] = field(default_factory=dict)  # split -> headline metric
    zero_fractions: dict[str, float] = field(default_factory=dict)  # split -> fraction of exact zeros
    zero_by_layer: list[float] = field(default_factory=list)
    seconds_per_epoch: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    error: str = ""
    finished: float = 0.0  # mtime of metrics.json: which of two identical runs is newer

    def metric_name(self, split: str | None = None) -> str:
        return f"{split or self.splits[0]} {self.headline}"

    @property
    def metric(self) -> float | None:
        """The headline metric on the first evaluation split: the one sweeps select on and plots show."""
        return self.metrics.get(self.splits[0])

    @property
    def zero_fraction(self) -> float | None:
        return self.zero_fractions.get(self.splits[0])

    def value(self, attr: str, split: str | None = None) -> float | None:
        """``metric`` / ``zero_fraction`` on ``split`` (default: the first split), or another attribute."""
        if attr in ("metric", "zero_fraction"):
            return getattr(self, attr + "s").get(split or self.splits[0])
        return getattr(self, attr)

    @property
    def param(self) -> float | None:
        """The sparsity parameter the attention varies, if any (lam or alpha)."""
        if self.transform in ("sparse", "learned_lam"):
            return self.lam
        if self.transform in ("entmax", "learned_alpha"):
            return self.alpha
        return None

    @property
    def group(self) -> tuple:
        return (self.task, self.model, self.pretrained, self.setup, self.attn, self.param)


def find_run_dirs(roots: list[Path]) -> list[Path]:
    dirs: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        for cfg in root.rglob(".hydra/config.yaml"):
            dirs.add(cfg.parent.parent)
    return sorted(dirs)


def training_setup(t: Any) -> str:
    """The caps of a run in a few words, e.g. ``8000 train ex, 1 ep, len 64, lr 5e-05``."""
    cap = t.get("max_train_samples")
    size = f"{t.max_steps} steps" if t.get("max_steps", -1) > 0 else f"{float(t.epochs):g} ep"
    parts = [f"{cap if cap else 'all'} train ex", size, f"len {t.max_seq_length}", f"lr {float(t.learning_rate):g}"]
    if t.get("max_eval_samples"):
        parts.append(f"{t.max_eval_samples} eval ex")
    if t.get("group_by_length"):
        parts.append("length-grouped")
    return ", ".join(parts)


def attention_name(cfg: Any) -> str:
    """The attention's name, plus its own learning rate when it learns alpha / lam at one: a learned
    attention at another rate is another attention, compared with the same softmax runs."""
    attn_lr = cfg.trainer.get("attn_learning_rate")
    if attn_lr is None or not str(cfg.attn.transform).startswith("learned"):
        return str(cfg.attn.name)
    return f"{cfg.attn.name} (lr {float(attn_lr):g})"


def load_run(path: Path) -> Run:
    cfg = OmegaConf.load(path / ".hydra" / "config.yaml")
    kind = cfg.task.get("kind", "classification")
    splits = list(cfg.task.eval_splits)
    run = Run(
        path=path,
        task=cfg.task.name,
        attn=attention_name(cfg),
        transform=cfg.attn.transform,
        lam=float(cfg.attn.lam),
        alpha=float(cfg.attn.alpha),
        model=cfg.model.name,
        pretrained=bool(cfg.model.pretrained),
        seed=int(cfg.seed),
        status="missing",
        setup=training_setup(cfg.trainer),
        headline=HEADLINE[kind],
        splits=splits,
    )
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        run.error = "no metrics.json (crashed, killed or still running)"
        return run
    m = json.loads(metrics_file.read_text())
    run.finished = metrics_file.stat().st_mtime
    run.status = m.get("status", "completed")
    if run.status != "completed":
        run.error = m.get("error", "failed")
        return run
    final = m["final"]
    for split in splits:
        if (metric := final.get(f"eval_{split}_{HEADLINE[kind]}")) is not None:
            run.metrics[split] = metric
        if (zeros := final.get(f"eval_{split}_attn_zero_fraction")) is not None:
            run.zero_fractions[split] = zeros
    layers = m.get("attention", {}).get(f"eval_{splits[0]}", {}).get("zero_fraction", [])
    run.zero_by_layer = [statistics.fmean(heads) for heads in layers]
    run.seconds_per_epoch = m.get("train", {}).get("seconds_per_epoch")
    run.curve = [(h["step"], h["loss"]) for h in m.get("history", []) if "loss" in h and "step" in h]
    return run


@dataclass
class Group:
    key: tuple
    runs: list[Run]

    @property
    def task(self) -> str:
        return self.key[0]

    @property
    def pretrained(self) -> bool:
        return self.key[2]

    @property
    def setup(self) -> str:
        return self.key[3]

    @property
    def attn(self) -> str:
        return self.key[4]

    @property
    def param(self) -> float | None:
        return self.key[5]

    def stat(self, attr: str, split: str | None = None) -> tuple[float, float, int]:
        """(mean, sample std, n) of a numeric attribute over the group's completed runs; ``metric`` and
        ``zero_fraction`` on ``split`` (default: the first evaluation split)."""
        values = [v for r in self.runs if (v := r.value(attr, split)) is not None]
        if not values:
            return math.nan, math.nan, 0
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), std, len(values)


def group_runs(runs: list[Run]) -> list[Group]:
    """Completed runs grouped by configuration. A rerun of the same configuration and seed (e.g. a sweep
    point repeated as a headline row) would count one seed twice, so only the newest is kept; the
    others get status ``duplicate`` and are listed apart."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    newest: dict[tuple, Run] = {}
    for r in sorted((r for r in runs if r.status == "completed"), key=lambda r: r.finished, reverse=True):
        key = (*r.group, r.seed)
        if key in newest:
            r.status, r.error = "duplicate", f"same configuration and seed as {newest[key].path}, which is counted"
            continue
        newest[key] = r
        groups[r.group].append(r)
    return [Group(k, v) for k, v in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]


def fmt(mean: float, std: float, n: int, scale: float = 1.0, digits: int = 2) -> str:
    if n == 0:
        return "-"
    s = f"{mean * scale:.{digits}f}"
    return s + (f" ± {std * scale:.{digits}f}" if n > 1 else "")


def softmax_baselines(groups: list[Group]) -> dict[tuple, Group]:
    """The softmax group of each task, model, pre-training and budget: what every other row is compared with."""
    return {g.key[:4]: g for g in groups if g.attn == "softmax"}


def beyond_two_std(d: tuple[float, float, int]) -> bool:
    """Whether a :func:`difference` passes the 2-std test (never with one seed: its threshold is NaN)."""
    diff, threshold, _ = d
    return abs(diff) >= threshold


def difference(g: Group, base: Group, split: str | None = None) -> tuple[float, float, int] | None:
    """(``g``'s mean minus ``base``'s, the significance threshold 2 x the larger std, the fewer seeds of the two)
    on ``split``, in the metric's own units; None when either side has no result. The threshold is NaN when
    either side has one seed: no std, so no claim either way."""
    (m, s, n), (bm, bs, bn) = g.stat("metric", split), base.stat("metric", split)
    if n == 0 or bn == 0:
        return None
    fewer = min(n, bn)
    return m - bm, (2 * max(s, bs) if fewer > 1 else math.nan), fewer  # max() with a NaN is order-dependent


def unit_scale(g: Group) -> float:
    """Accuracy is shown in percent, F1 (already 0-100) as is."""
    return 1.0 if g.runs[0].headline == "f1" else 100.0


def versus(g: Group, base: Group | None, split: str | None = None) -> str:
    """``g``'s mean minus the softmax baseline's, marked n.s. when smaller than 2 std of either group."""
    if base is None or base is g or (d := difference(g, base, split)) is None:
        return "-"
    diff, _, seeds = d
    text = f"{diff * unit_scale(g):+.2f}"
    if seeds < 2:
        return f"{text} (untested: < 2 seeds)"
    return text + (" (> 2 std)" if beyond_two_std(d) else " (n.s.)")


def several_budgets(groups: list[Group]) -> set[tuple]:
    """The (task, model, pre-trained) combinations run at more than one training setup: their labels need
    the setup to tell the rows apart."""
    budgets: dict[tuple, set[str]] = defaultdict(set)
    for g in groups:
        budgets[g.key[:3]].add(g.setup)
    return {k for k, v in budgets.items() if len(v) > 1}


def grid_table(groups: list[Group]) -> str:
    """The task x attention matrix: a row per task, model, training setup and evaluation split, a column per
    attention (and lam/alpha), each cell the headline metric's mean ± std with the number of seeds; ``*``
    marks a difference to the row's softmax beyond 2 std. An empty cell is a combination that was not run."""

    def column(g: Group) -> tuple:  # softmax first, then SSAF by lam, then the rest by name
        return (g.attn != "softmax", g.attn != "sparse", g.attn, -math.inf if g.param is None else g.param)

    columns = sorted({column(g) for g in groups})
    names = [f"{c[2]}" + ("" if c[3] == -math.inf else f" {c[3]:g}") for c in columns]
    baselines = softmax_baselines(groups)
    several = several_budgets(groups)
    rows: dict[tuple, dict[tuple, str]] = defaultdict(dict)
    for g in groups:
        for split in g.runs[0].splits:
            mean, std, n = g.stat("metric", split)
            if n == 0:
                continue
            cell = f"{fmt(mean, std, n, scale=unit_scale(g))} ({n})"
            base = baselines.get(g.key[:4])
            if base is not None and base is not g and (d := difference(g, base, split)) and beyond_two_std(d):
                cell += " *"
            rows[(*g.key[:4], g.runs[0].metric_name(split))][column(g)] = cell
    lines = [
        "| task | model | pre-trained | metric | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for (task, model, pretrained, setup, metric), cells in rows.items():
        name = task + (f" ({setup})" if (task, model, pretrained) in several else "")
        lines.append(
            f"| {name} | {model} | {'yes' if pretrained else 'no'} | {metric} | "
            + " | ".join(cells.get(c, "") for c in columns)
            + " |"
        )
    return "\n".join(lines)


def markdown_table(groups: list[Group], runs: list[Run]) -> str:
    lines = [
        "| task | model | pre-trained | training | attention | lam/alpha | metric | mean ± std | n | vs softmax "
        "| zero fraction | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    baselines = softmax_baselines(groups)
    for g in groups:
        task, model, pretrained, setup, attn, param = g.key
        first = g.runs[0]
        for split in first.splits:  # one row per evaluated split: dev and test, matched and mismatched
            lines.append(
                f"| {task} | {model} | {'yes' if pretrained else 'no'} | {setup} | {attn} | "
                f"{'-' if param is None else param} | {first.metric_name(split)} | "
                f"{fmt(*g.stat('metric', split), scale=unit_scale(g))} | {g.stat('metric', split)[2]} | "
                f"{versus(g, baselines.get(g.key[:4]), split)} | "
                f"{fmt(*g.stat('zero_fraction', split), digits=3)} | {fmt(*g.stat('seconds_per_epoch'), digits=0)} |"
            )
    duplicates = [r for r in runs if r.status == "duplicate"]
    if duplicates:
        lines += ["", f"**{len(duplicates)} duplicate run(s)** (not counted):", ""]
        lines += [f"- `{r.path}` ({r.task}, {r.attn}, seed {r.seed}): {r.error}" for r in duplicates]
    problems = [r for r in runs if r.status not in ("completed", "duplicate")]
    if problems:
        lines += ["", f"**{len(problems)} run(s) without results** (not in the table):", ""]
        lines += [f"- `{r.path}` ({r.task}, {r.attn}, seed {r.seed}): {r.status}: {r.error[:200]}" for r in problems]
    return "\n".join(lines)


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def label(g: Group) -> str:
    """task attention [parameter]: how a group is named in legends."""
    return (
        f"{g.task} {g.attn}"
        + ("" if g.param is None else f" {g.param}")
        + ("" if g.pretrained else " (no pre-training)")
    )


def plot_metric_vs_param(groups: list[Group], out: Path) -> Path | None:
    """Headline metric vs lam (or alpha) with error bars, softmax as a horizontal line; one panel per task
    and training setup."""
    by_task: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in groups:
        by_task[(g.task, g.setup)].append(g)
    swept = {t: gs for t, gs in by_task.items() if any(g.param is not None for g in gs)}
    if not swept:
        return None
    fig, axes = plt.subplots(1, len(swept), figsize=(5.5 * len(swept), 4), squeeze=False)
    for ax, (task, gs) in zip(axes[0], sorted(swept.items()), strict=True):
        series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for g in gs:
            mean, std, _ = g.stat("metric")
            if g.param is None:
                baseline = g.attn + ("" if g.pretrained else " (no pre-training)")
                line = ax.axhline(mean, linestyle="--", linewidth=1, label=baseline)
                if not math.isnan(std):
                    ax.axhspan(mean - std, mean + std, alpha=0.1, color=line.get_color())
            else:
                series[g.attn + ("" if g.pretrained else " (no pre-training)")].append((g.param, mean, std))
        for name, pts in sorted(series.items()):
            pts.sort()
            ax.errorbar(
                [p[0] for p in pts], [p[1] for p in pts], yerr=[0 if math.isnan(p[2]) else p[2] for p in pts],
                marker="o", capsize=3, label=name,
            )  # fmt: skip
        ax.set_title(f"{task[0]} ({task[1]})" if len(swept) > 1 else task[0], fontsize=9)
        ax.set_xlabel("lam (sparse) / alpha (entmax)")
        ax.set_ylabel(gs[0].runs[0].metric_name())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out / "metric_vs_param.png")


def plot_sparsity_by_layer(groups: list[Group], out: Path) -> Path | None:
    """Fraction of exact zeros per layer, one line per parameter value (mean over seeds)."""
    gs = [g for g in groups if any(r.zero_by_layer for r in g.runs)]
    if not gs:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for g in gs:
        layers = [r.zero_by_layer for r in g.runs if r.zero_by_layer]
        mean = [statistics.fmean(v) for v in zip(*layers, strict=True)]
        ax.plot(range(len(mean)), mean, marker="o", label=label(g))
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of exact zeros (valid keys)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, out / "sparsity_by_layer.png")


def plot_training_curves(groups: list[Group], out: Path) -> Path | None:
    gs = [g for g in groups if any(r.curve for r in g.runs)]
    if not gs:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for g in gs:
        for i, r in enumerate(g.runs):
            if r.curve:
                line = ax.plot(*zip(*r.curve, strict=True), alpha=0.8, linewidth=1, label=label(g) if i == 0 else None)
                if i == 0:
                    color = line[0].get_color()
                else:
                    line[0].set_color(color)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, out / "training_curves.png")


def differences(groups: list[Group]) -> list[tuple[str, float, float, int]]:
    """(label, mean - softmax mean, 2 x the larger std, fewer seeds of the two) for every group and split that
    has a softmax row of the same task, model, pre-training and budget; in points (accuracy %, F1).

    The half-width is the significance threshold of ``versus``: a bar whose whisker crosses 0 is n.s.;
    it is NaN when either side has one seed. A task run at several budgets gets the budget in its label.
    """
    baselines = softmax_baselines(groups)
    several = several_budgets(groups)
    rows = []
    for g in groups:
        base = baselines.get(g.key[:4])
        if base is None or base is g:
            continue
        first = g.runs[0]
        for split in first.splits:
            if (d := difference(g, base, split)) is not None:
                name = f"{label(g)}, {split}" + (" F1" if first.headline == "f1" else "")
                if g.key[:3] in several:
                    name += f" ({g.setup})"
                diff, threshold, seeds = d
                rows.append((name, diff * unit_scale(g), threshold * unit_scale(g), seeds))
    return rows


def plot_vs_softmax(groups: list[Group], out: Path) -> Path | None:
    """Each attention's difference to softmax (same task, budget and split), whiskers at 2 std: the
    paper's "beats softmax on every dataset" claim at a glance. One-seed comparisons are hollow, no whisker."""
    rows = differences(groups)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2))
    for y, (_, diff, half, _) in enumerate(rows):
        color = "tab:green" if diff > 0 else "tab:red"
        tested = not math.isnan(half)
        ax.barh(y, diff, color=color if tested else "none", edgecolor=color, xerr=half if tested else None, capsize=3)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("minus softmax (points); whiskers: 2 std; hollow: 1 seed")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, out / "vs_softmax.png")


def plot_time_per_epoch(groups: list[Group], out: Path) -> Path | None:
    gs = [g for g in groups if g.stat("seconds_per_epoch")[2]]
    if not gs:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(gs) + 2), 4))
    labels = [label(g).replace(" ", "\n", 1) for g in gs]
    means = [g.stat("seconds_per_epoch")[0] for g in gs]
    stds = [0 if math.isnan(s := g.stat("seconds_per_epoch")[1]) else s for g in gs]
    ax.bar(range(len(gs)), means, yerr=stds, capsize=3)
    ax.set_xticks(range(len(gs)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("seconds per epoch")
    return save(fig, out / "time_per_epoch.png")


def best_param(groups: list[Group], attn: str) -> float:
    """The lam (or alpha) of ``attn``'s group with the highest mean headline metric: the dev-sweep choice.

    The sweep must be one task at one training setup; anything else has no single answer, so it is refused.
    """
    swept = [g for g in groups if g.attn == attn and g.param is not None]
    if not swept:
        raise ValueError(f"no completed {attn!r} runs with a lam/alpha among the runs found")
    settings = {g.key[:4] for g in swept}  # task, model, pre-trained, setup
    if len(settings) > 1:
        raise ValueError(
            f"the {attn!r} runs span {len(settings)} task/model/setup combinations; point at one sweep folder"
        )
    best = max(swept, key=lambda g: g.stat("metric")[0])
    assert best.param is not None
    return best.param


def write_report(roots: list[Path], out: Path, title: str = "ssaf runs") -> dict[str, Any]:
    """Write report.md, report.html and the PNGs into ``out``; returns what it found."""
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(d) for d in find_run_dirs(roots)]
    if not runs:
        raise FileNotFoundError(f"no run directories (with .hydra/config.yaml) under {', '.join(map(str, roots))}")
    groups = group_runs(runs)
    table = markdown_table(groups, runs)
    plots = [
        p
        for p in (
            plot_metric_vs_param(groups, out),
            plot_sparsity_by_layer(groups, out),
            plot_training_curves(groups, out),
            plot_time_per_epoch(groups, out),
            plot_vs_softmax(groups, out),
        )
        if p is not None
    ]
    grid = grid_table(groups)
    md = [f"# {title}", "", f"{len(runs)} runs under {', '.join(map(str, roots))}", ""]
    md += ["## Task x attention", "", GRID_LEGEND, "", grid, "", "## Every group", "", table, ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    (out / "report.md").write_text("\n".join(md) + "\n")
    imgs = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" alt="{p.stem}">'
        f"<figcaption>{p.stem.replace('_', ' ')}</figcaption></figure>"
        for p in plots
    )
    body = "\n".join(html.escape(line) for line in [GRID_LEGEND, "", *grid.splitlines(), "", *table.splitlines()])
    (out / "report.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}pre{{font-size:12px}}"
        f"img{{max-width:100%}}</style><h1>{html.escape(title)}</h1><pre>{body}</pre>{imgs}"
    )
    return {"runs": runs, "groups": groups, "plots": plots, "table": table, "grid": grid}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Compare ssaf runs: tables and plots from run directories.")
    ap.add_argument("roots", nargs="+", type=Path, help="folders holding run directories (outputs/, multirun/...)")
    ap.add_argument("--out", type=Path, default=Path("reports/latest"), help="where to write the report")
    ap.add_argument("--title", default="ssaf runs")
    ap.add_argument(
        "--best-param",
        metavar="ATTN",
        help="print only the lam/alpha of ATTN's best group (e.g. sparse: the lam a dev sweep chose) and exit",
    )
    args = ap.parse_args(argv)
    if args.best_param:
        runs = [load_run(d) for d in find_run_dirs(args.roots)]
        try:
            print(f"{best_param(group_runs(runs), args.best_param):g}")
        except ValueError as e:
            raise SystemExit(f"ssaf-compare: {e}") from e
        return
    result = write_report(args.roots, args.out, args.title)
    print(result["table"])
    print(f"\nwrote {args.out / 'report.md'} and {args.out / 'report.html'} ({len(result['plots'])} plots)")


if __name__ == "__main__":
    main()
