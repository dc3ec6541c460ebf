"""Aggregation over seeds and the tests the report applies: pure functions of runs, no I/O."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

from ssaf import kinds
from ssaf.report.runs import GroupKey, Run, Setting


@dataclass
class Group:
    """The completed runs of one configuration (one per seed)."""

    key: GroupKey
    runs: list[Run]

    @property
    def setting(self) -> Setting:
        return self.key.setting

    @property
    def task(self) -> str:
        return self.key.setting.task

    @property
    def attn(self) -> str:
        return self.key.attn

    @property
    def param(self) -> float | None:
        return self.key.param

    @property
    def pretrained(self) -> bool:
        return self.key.setting.pretrained

    @property
    def first(self) -> Run:
        return self.runs[0]

    def stat(self, attr: str, split: str | None = None) -> tuple[float, float, int]:
        """(mean, sample std, n) of ``metric``, ``zero_fraction`` (on ``split``, default the selection split)
        or ``seconds_per_epoch`` over the group's runs."""
        values = [v for r in self.runs if (v := r.value(attr, split)) is not None]
        if not values:
            return math.nan, math.nan, 0
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), std, len(values)

    def by_seed(self, split: str | None = None) -> dict[int, float]:
        return {r.seed: v for r in self.runs if (v := r.value("metric", split)) is not None}


def group_runs(runs: list[Run]) -> list[Group]:
    """Completed runs grouped by configuration. A rerun of the same configuration and seed (e.g. a sweep
    point repeated as a headline row) would count one seed twice, so only the newest is kept; the
    others get status ``duplicate`` and are listed apart."""
    groups: dict[GroupKey, list[Run]] = defaultdict(list)
    newest: dict[tuple[GroupKey, int], Run] = {}
    for r in sorted((r for r in runs if r.status == "completed"), key=lambda r: r.finished, reverse=True):
        if (r.key, r.seed) in newest:
            r.status, r.error = (
                "duplicate",
                f"same configuration and seed as {newest[r.key, r.seed].path}, which is counted",
            )
            continue
        newest[r.key, r.seed] = r
        groups[r.key].append(r)
    return [
        Group(k, sorted(v, key=lambda r: r.seed)) for k, v in sorted(groups.items(), key=lambda kv: kv[0].sort_key())
    ]


def softmax_baselines(groups: list[Group]) -> dict[Setting, Group]:
    """The softmax group of each setting: what every other group is compared with."""
    return {g.setting: g for g in groups if g.attn == "softmax"}


# How the table and the vs-softmax plot name a comparison with one seed on either side (no std: no claim).
UNTESTED = "untested: < 2 seeds"


def difference(g: Group, base: Group, split: str | None = None) -> tuple[float, float, int] | None:
    """(``g``'s mean minus ``base``'s, the significance threshold 2 x the larger std, the fewer seeds of the two)
    on ``split``, in the metric's own units; None when either side has no result. The threshold is NaN when
    either side has one seed: no std, so no claim either way."""
    (m, s, n), (bm, bs, bn) = g.stat("metric", split), base.stat("metric", split)
    if n == 0 or bn == 0:
        return None
    fewer = min(n, bn)
    return m - bm, (2 * max(s, bs) if fewer > 1 else math.nan), fewer  # max() with a NaN is order-dependent


def beyond_two_std(d: tuple[float, float, int]) -> bool:
    """Whether a :func:`difference` passes the 2-std test (never with one seed: its threshold is NaN)."""
    diff, threshold, _ = d
    return abs(diff) >= threshold


def paired_t(g: Group, base: Group, split: str | None = None) -> tuple[float, float, int] | None:
    """A paired t-test over the seeds both groups ran: (mean difference, two-sided p, pairs), or None with
    fewer than 2 pairs.

    Pairing is justified because ssaf seeds everything from the seed: the same seed gives both runs the
    same data order, the same sample of a capped set and the same task-head initialisation, so the paired
    differences remove that shared variation. With 3 seeds the test has 2 degrees of freedom: weak.
    """
    a, b = g.by_seed(split), base.by_seed(split)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = [a[s] - b[s] for s in seeds]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    if sd == 0:
        return mean, (0.0 if mean != 0 else 1.0), len(d)
    t = mean / (sd / math.sqrt(len(d)))
    return mean, two_sided_p(t, len(d) - 1), len(d)


def two_sided_p(t: float, dof: int) -> float:
    """P(|T| >= |t|) for Student's t with ``dof`` degrees of freedom: I_x(dof/2, 1/2) with x = dof/(dof+t^2)."""
    return regularized_beta(dof / (dof + t * t), dof / 2, 0.5)


def regularized_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (Lentz's method)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below this point; use the symmetry
        return 1.0 - regularized_beta(1 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(200):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-14:
            break
    return front * (f - 1.0)


def unit_scale(g: Group) -> float:
    """Accuracy is shown in percent, SQuAD's exact match and F1 (already 0-100) as they are."""
    return kinds.get(g.first.s.kind).scale


def ambiguous_settings(groups: list[Group]) -> set[tuple[str, str, bool]]:
    """The (task, model, pre-trained) combinations run on more than one data version or budget: their labels
    need the setting to tell the rows apart."""
    seen: dict[tuple[str, str, bool], set[tuple[str, str]]] = defaultdict(set)
    for g in groups:
        seen[(g.task, g.setting.model, g.pretrained)].add((g.setting.data, g.setting.budget))
    return {k for k, v in seen.items() if len(v) > 1}


def best_param(groups: list[Group], attn: str) -> float:
    """The lam (or alpha) of ``attn``'s group with the highest mean selection metric: the dev-sweep choice.

    The sweep must be one setting; anything else has no single answer, so it is refused.
    """
    swept = [g for g in groups if g.attn == attn and g.param is not None]
    if not swept:
        raise ValueError(f"no completed {attn!r} runs with a lam/alpha among the runs found")
    settings = {g.setting for g in swept}
    if len(settings) > 1:
        raise ValueError(
            f"the {attn!r} runs span {len(settings)} task/model/data/budget settings; point at one sweep folder"
        )
    best = max(swept, key=lambda g: g.stat("metric")[0])
    assert best.param is not None
    return best.param
