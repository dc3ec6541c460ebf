"""Run directories -> runs: the I/O of the report. A run directory is a folder with ``metrics.json`` (the
:class:`~ssaf.summary.RunSummary`) or, for a run that died before writing it, Hydra's ``.hydra/``.
Nothing here raises on a bad run: it becomes a run with a status and the reason, listed by the report.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ssaf import keys
from ssaf.summary import RunSummary, read_summary


@dataclass(frozen=True, order=True)
class Setting:
    """What a comparison holds fixed: task, model, pre-training, the data itself and the training budget."""

    task: str
    model: str
    pretrained: bool
    data: str  # the data's fingerprint (source:hash)
    budget: str  # every cap, in words (ssaf.summary.Budget.label)


@dataclass(frozen=True)
class GroupKey:
    """A configuration aggregated over seeds: a setting, an attention and its lam / alpha."""

    setting: Setting
    attn: str  # the attention's label (a learned attention at its own learning rate is its own)
    param: float | None  # the lam / alpha it varies, or None

    def sort_key(self) -> tuple:
        return (self.setting, self.attn, -float("inf") if self.param is None else self.param)


@dataclass
class Run:
    """One run directory, read; ``summary`` is None when it could not be (see ``status`` and ``error``)."""

    path: Path
    status: str  # completed | failed | interrupted | running | rejected | missing | unreadable | duplicate
    summary: RunSummary | None = None
    error: str = ""
    finished: float = 0.0  # mtime of metrics.json: which of two identical runs is newer
    metrics: dict[str, float] = field(default_factory=dict)  # split -> headline metric
    zero_fractions: dict[str, float] = field(default_factory=dict)  # split -> fraction of exact zeros

    @property
    def s(self) -> RunSummary:
        assert self.summary is not None, f"{self.path} was not read ({self.status})"
        return self.summary

    @property
    def key(self) -> GroupKey:
        s = self.s
        data = s.data.fingerprint if s.data else "unknown"
        return GroupKey(Setting(s.task, s.model, s.pretrained, data, s.budget.label), s.attn.label, s.attn.value)

    @property
    def demo(self) -> bool:
        return self.summary is not None and self.summary.data is not None and self.summary.data.demo

    @property
    def splits(self) -> list[str]:
        return self.s.all_splits

    @property
    def seed(self) -> int:
        return self.s.seed

    def metric_name(self, split: str | None = None) -> str:
        return f"{split or self.splits[0]} {self.s.metric}"

    def value(self, attr: str, split: str | None = None) -> float | None:
        """``metric`` / ``zero_fraction`` on ``split`` (default: the selection split), or ``seconds_per_epoch``."""
        if attr == "metric":
            return self.metrics.get(split or self.splits[0])
        if attr == "zero_fraction":
            return self.zero_fractions.get(split or self.splits[0])
        if attr == "seconds_per_epoch":
            return self.s.train.seconds_per_epoch if self.s.train else None
        raise KeyError(attr)

    @property
    def zero_by_layer(self) -> list[float]:
        layers = self.s.attention.get(keys.prefix(self.splits[0]), {}).get("zero_fraction", [])
        return [statistics.fmean(heads) for heads in layers]

    @property
    def curve(self) -> list[tuple[int, float]]:
        """(step, train loss) as logged."""
        return [(h["step"], h["loss"]) for h in self.s.history if "loss" in h and "step" in h]


def find_run_dirs(roots: list[Path]) -> list[Path]:
    """Every run directory under ``roots``: a folder holding ``metrics.json`` or ``.hydra/config.yaml``."""
    dirs: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        dirs.update(p.parent for p in root.rglob("metrics.json"))
        dirs.update(p.parent.parent for p in root.rglob(".hydra/config.yaml"))
    return sorted(dirs)


def load_run(path: Path) -> Run:
    """Read one run directory; never raises: what cannot be read is a status and a reason."""
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        return Run(path, "missing", error="no metrics.json (crashed before it started, or killed early)")
    try:
        summary = read_summary(path)
    except ValueError as e:
        status = "rejected" if "was rejected" in str(e) else "unreadable"
        return Run(path, status, error=str(e))
    run = Run(path, summary.status, summary, error=summary.error or "", finished=metrics_file.stat().st_mtime)
    if summary.status == "running":
        run.error = "no final status: still running, or killed (SIGKILL, out of memory) while running"
    for split in summary.all_splits:
        if (metric := summary.final.get(keys.metric(split, summary.metric))) is not None:
            run.metrics[split] = metric
        if (zeros := summary.final.get(keys.stat_mean(keys.prefix(split), "zero_fraction"))) is not None:
            run.zero_fractions[split] = zeros
    return run
