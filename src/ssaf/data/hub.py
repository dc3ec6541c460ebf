"""Loading a task from the Hugging Face hub (``datasets.load_dataset``), mapped to ssaf rows."""

from __future__ import annotations

from typing import Any

from ssaf.data.errors import DataError
from ssaf.data.local import Row
from ssaf.settings import TaskSpec


def read_hub_split(task: TaskSpec, split: str) -> tuple[list[Row], str]:
    """Rows of one split from the hub (labels as names), and the data's fingerprint (hub id and revision)."""
    if task.hub is None:
        raise DataError(f"task {task.name} has no hub copy; use data.source=local with data.dir (or SSAF_DATA_DIR)")
    import datasets

    hub_split = task.hub.splits.get(split)
    if hub_split is None:
        raise DataError(f"task {task.name}: no hub split for {split!r}; mapped: {task.hub.splits}")
    ds = datasets.load_dataset(task.hub.path, task.hub.name, split=hub_split)
    return hub_rows(ds, task), f"{task.hub.path}/{task.hub.name or ''}:{hub_split}@{ds._fingerprint}"


def hub_rows(ds: Any, task: TaskSpec) -> list[Row]:
    """A hub dataset's rows as (text_a, text_b, label name); columns named by ``task.hub``, never guessed."""
    assert task.hub is not None
    columns = [task.hub.fields.get(f, f) for f in task.text_fields] + [task.hub.label]
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"hub dataset {task.hub.path}: no column {', '.join(map(repr, missing))} (columns: "
            f"{', '.join(ds.column_names)}); map the task's fields with task.hub.fields (e.g. {{sentence: text}}) "
            "and its label column with task.hub.label"
        )
    names = getattr(ds.features.get(task.hub.label), "names", None)
    rows: list[Row] = []
    for ex in ds:
        y = ex[task.hub.label]
        if isinstance(y, int):
            if y < 0:  # SNLI pairs without a gold label
                rows.append(("", None, "-"))
                continue
            if names is None:
                raise DataError(
                    f"hub dataset {task.hub.path}: column {task.hub.label!r} holds integer ids without label "
                    "names (not a ClassLabel); point task.hub.label at a column of label names (SetFit: label_text)"
                )
            y = names[y]
        b = ex[columns[1]] if task.pair else None
        rows.append((ex[columns[0]], b, str(y)))
    return rows
