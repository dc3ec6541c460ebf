"""What a task is: its labels, text fields, splits and where its data lives (typed, validated)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face hub dataset: ``datasets.load_dataset(path, name)`` with our split names mapped.

    ``fields`` maps the task's text fields to the hub's columns where the names differ (SetFit's ``text``
    for ``sentence``); ``label`` is the column holding the gold label: label names, or integer ids of a
    ``ClassLabel`` (whose names are then used). Nothing is guessed: a missing column is an error.
    """

    path: str
    name: str | None
    splits: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    label: str = "label"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # classification | qa
    labels: tuple[str, ...]
    text_fields: tuple[str, ...]
    metric: str
    metric_for_best: str
    train_split: str
    eval_splits: tuple[str, ...]  # evaluated during training; the first selects the checkpoint
    splits: tuple[str, ...]
    local: str  # the local layout's name (see ssaf.data.local.LAYOUTS)
    hub: HubSource | None = None
    max_seq_length: int = 128
    test_splits: tuple[str, ...] = ()  # evaluated once, on the selected checkpoint
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
        for s in self.test_splits:
            if s not in self.splits or s in self.eval_splits or s == self.train_split:
                raise ValueError(
                    f"task {self.name}: test split {s!r} must be one of its splits ({', '.join(self.splits)}) "
                    "and neither the train split nor an eval split"
                )
        if self.kind == "classification" and len(self.labels) < 2:
            raise ValueError(f"task {self.name}: a classification task needs at least 2 labels, got {self.labels}")

    @property
    def pair(self) -> bool:
        return len(self.text_fields) == 2
