"""The report's pictures (PNG). matplotlib's backend is the caller's choice: the CLI selects Agg."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from ssaf import registry
from ssaf.report.stats import UNTESTED, Group, ambiguous_settings, difference, softmax_baselines, unit_scale


def param_axis() -> str:
    """The parameter axis' label, from the registry: each parameter and the fixed-parameter transforms that
    read it, e.g. ``lam (sparse) / alpha (entmax)``."""
    readers = {
        name: ", ".join(t.name for t in registry.TRANSFORMS.values() if t.param == name and not t.learned)
        for name in registry.PARAMS
    }
    return " / ".join(f"{name} ({names})" if names else name for name, names in readers.items())


def save(fig: Any, path: Path) -> Path:
    # bbox "tight" grows the canvas to the labels: long row labels were cut at the left edge otherwise.
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def label(g: Group, ambiguous: set | None = None) -> str:
    """task attention [parameter]: how a group is named in legends (with its budget when the task ran at
    several, so that two budgets never share a legend entry)."""
    name = (
        f"{g.task} {g.attn}"
        + ("" if g.param is None else f" {g.param:g}")
        + ("" if g.pretrained else " (no pre-training)")
    )
    if ambiguous and (g.task, g.setting.model, g.pretrained) in ambiguous:
        name += f" [{g.setting.budget}]"
    return name


# What metric_vs_param's error bars and band are (the reader cannot tell std from s.e. by looking).
ERROR_BARS = "mean over seeds; bars and band: ± 1 std"


def plot_metric_vs_param(groups: list[Group], out: Path) -> Path | None:
    """Headline metric (selection split) vs lam (or alpha) with ± 1 sample std error bars over seeds,
    softmax as a horizontal line with a ± 1 std band; one panel per task and setting."""
    by_setting: dict[Any, list[Group]] = defaultdict(list)
    for g in groups:
        by_setting[(g.task, g.setting.budget, g.setting.data, g.setting.model)].append(g)
    swept = {k: gs for k, gs in by_setting.items() if any(g.param is not None for g in gs)}
    if not swept:
        return None
    cols = min(3, len(swept))
    rows = math.ceil(len(swept) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(swept) :]:
        ax.axis("off")
    for ax, (key, gs) in zip(axes.flat, sorted(swept.items()), strict=False):
        series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        scale = unit_scale(gs[0])
        for g in gs:
            mean, std, n = g.stat("metric")
            if n == 0:
                continue
            name = g.attn + ("" if g.pretrained else " (no pre-training)")
            if g.param is None:
                # The reference lines are grey, dashed with pre-training and dotted without, so that they
                # do not take (and share) the colours of the swept curves.
                style = "--" if g.pretrained else ":"
                seeds = f"{n} seed{'s' if n != 1 else ''}"
                ax.axhline(mean * scale, linestyle=style, color="0.35", linewidth=1, label=f"{name} ({seeds})")
                if not math.isnan(std):
                    ax.axhspan((mean - std) * scale, (mean + std) * scale, alpha=0.1, color="0.35")
            else:
                series[name].append((g.param, mean * scale, 0.0 if math.isnan(std) else std * scale))
        for name, pts in sorted(series.items()):
            pts.sort()
            ax.errorbar(
                [p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=name
            )
        task, budget = key[0], key[1]
        ax.set_title(f"{task} ({budget})" if len(swept) > 1 else task, fontsize=8)
        ax.set_xlabel(param_axis())
        ax.set_ylabel(gs[0].first.metric_name())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title=ERROR_BARS, title_fontsize=7)
    return save(fig, out / "metric_vs_param.png")


def plot_sparsity_by_layer(groups: list[Group], out: Path) -> Path | None:
    """Fraction of exact zeros per layer, one line per group (mean over seeds)."""
    gs = [g for g in groups if any(r.zero_by_layer for r in g.runs)]
    if not gs:
        return None
    ambiguous = ambiguous_settings(groups)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # past 10 groups the default cycle repeats its colours, and two legend entries would share one
    cmap, n = ("tab10", 10) if len(gs) <= 10 else ("tab20", 20)
    colours = [plt.get_cmap(cmap)(k) for k in range(n)]
    for i, g in enumerate(gs):
        layers = [r.zero_by_layer for r in g.runs if r.zero_by_layer]
        mean = [statistics.fmean(v) for v in zip(*layers, strict=True)]
        marker = "o" if i < 20 else "s"  # tab20's colours repeat past 20: the marker tells those apart
        ax.plot(range(len(mean)), mean, marker=marker, color=colours[i % n], label=label(g, ambiguous))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are 0, 1, ...: no 0.2 ticks
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of exact zeros (valid keys)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(fig, out / "sparsity_by_layer.png")


def plot_training_curves(groups: list[Group], out: Path) -> Path | None:
    """Train loss against step, a colour per group (every seed of a group in its colour); runs that logged
    one point are drawn as a dot.

    Lines are opaque, so that where they cross the colour is one of the legend's (translucent lines blended
    into colours no entry has), and softmax, the reference, is drawn dashed in black on top of the others:
    attentions that train alike no longer hide it.
    """
    gs = [g for g in groups if any(r.curve for r in g.runs)]
    if not gs:
        return None
    ambiguous = ambiguous_settings(groups)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g in sorted(gs, key=lambda g: g.attn == "softmax"):  # softmax last
        softmax = g.attn == "softmax"
        color: Any = "black" if softmax else None
        named = False
        for r in g.runs:
            if not r.curve:
                continue
            steps, losses = zip(*r.curve, strict=True)
            (line,) = ax.plot(
                steps, losses, linewidth=1.2 if softmax else 1, color=color, linestyle="--" if softmax else "-",
                marker="o" if len(steps) == 1 else None, markersize=4, zorder=3 if softmax else 2,
                label=None if named else label(g, ambiguous),
            )  # fmt: skip
            color, named = line.get_color(), True
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(fig, out / "training_curves.png")


def differences(groups: list[Group]) -> list[tuple[str, float, float, int, int]]:
    """(label, mean - softmax mean, 2 x the larger std, the group's seeds, softmax's seeds) for every group and
    split that has a softmax group of the same setting; in points (accuracy %, F1).

    The half-width is the significance threshold of ``versus``: a bar whose whisker crosses 0 is n.s.;
    it is NaN when either side has one seed. A task run at several settings gets its budget in its label.
    """
    baselines = softmax_baselines(groups)
    ambiguous = ambiguous_settings(groups)
    rows = []
    for g in groups:
        base = baselines.get(g.setting)
        if base is None or base is g:
            continue
        for split in g.first.splits:
            if (d := difference(g, base, split)) is not None:
                name = f"{label(g, ambiguous)}, {split}" + (" F1" if g.first.s.metric == "f1" else "")
                diff, threshold, _ = d
                seeds, softmax_seeds = g.stat("metric", split)[2], base.stat("metric", split)[2]
                rows.append((name, diff * unit_scale(g), threshold * unit_scale(g), seeds, softmax_seeds))
    return rows


def plot_vs_softmax(groups: list[Group], out: Path) -> Path | None:
    """Each attention's difference to softmax (same setting and split), whiskers at 2 std: the paper's
    "beats softmax on every dataset" claim at a glance. Each row says its seeds and softmax's; a comparison
    with one seed on either side is hollow, with no whisker: untested, as the table says."""
    rows = differences(groups)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2))
    for y, (_, diff, half, _, _) in enumerate(rows):
        color = "tab:green" if diff > 0 else "tab:red"
        tested = not math.isnan(half)
        ax.barh(y, diff, color=color if tested else "none", edgecolor=color, xerr=half if tested else None, capsize=3)
    ax.set_yticks(range(len(rows)), [f"{r[0]} (n={r[3]}; softmax n={r[4]})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"minus softmax (points); whiskers: 2 std; hollow: {UNTESTED} on either side")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, out / "vs_softmax.png")


def plot_time_per_epoch(groups: list[Group], out: Path) -> Path | None:
    gs = [g for g in groups if g.stat("seconds_per_epoch")[2]]
    if not gs:
        return None
    ambiguous = ambiguous_settings(groups)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(gs) + 2), 4))
    labels = [label(g, ambiguous).replace(" ", "\n", 1) for g in gs]
    means = [g.stat("seconds_per_epoch")[0] for g in gs]
    stds = [0 if math.isnan(s := g.stat("seconds_per_epoch")[1]) else s for g in gs]
    ax.bar(range(len(gs)), means, yerr=stds, capsize=3)
    ax.set_xticks(range(len(gs)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("seconds per epoch")
    return save(fig, out / "time_per_epoch.png")


PLOTS = (plot_metric_vs_param, plot_sparsity_by_layer, plot_training_curves, plot_time_per_epoch, plot_vs_softmax)
