"""What a task is: its labels, text fields, splits and where its data lives (typed, validated)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face hub dataset: ``datasets.load_dataset(path, name)`` with our split names mapped."""

    path: str
    name: str | None
    splits: dict[str, str]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # classification | qa
    labels: tuple[str, ...]
    text_fields: tuple[str, ...]
    metric: str
    metric_for_best: str
    train_split: str
    eval_splits: tuple[str, ...]
    splits: tuple[str, ...]
    local: str  # the local layout's name (see ssaf.data.local.LAYOUTS)
    hub: HubSource | None = None
    max_seq_length: int = 128
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "qa"):
            raise ValueError(f"task {self.name}: kind must be 'classification' or 'qa', got {self.kind!r}")
        for s in (self.train_split, *self.eval_splits):
            if s not in self.splits:
                raise ValueError(
                    f"task {self.name} has no split {s!r}; its splits are: {', '.join(self.splits)} "
                    f"(set task.eval_splits to a subset of them)"
                )
        if not self.eval_splits:
            raise ValueError(f"task {self.name}: eval_splits is empty; choose from {', '.join(self.splits)}")
        if self.kind == "classification" and len(self.labels) < 2:
            raise ValueError(f"task {self.name}: a classification task needs at least 2 labels, got {self.labels}")

    @property
    def pair(self) -> bool:
        return len(self.text_fields) == 2
