"""Loading a task from the Hugging Face hub (``datasets.load_dataset``), mapped to ssaf rows."""

from __future__ import annotations

from ssaf.data.errors import DataError
from ssaf.data.local import Row
from ssaf.data.spec import TaskSpec


def read_hub_split(task: TaskSpec, split: str) -> list[Row]:
    """Rows of one split from the hub, labels as names (ClassLabel names, or strings, or indices)."""
    if task.hub is None:
        raise DataError(f"task {task.name} has no hub copy; use data.source=local with data.dir (or SSAF_DATA_DIR)")
    import datasets

    hub_split = task.hub.splits.get(split)
    if hub_split is None:
        raise DataError(f"task {task.name}: no hub split for {split!r}; mapped: {task.hub.splits}")
    ds = datasets.load_dataset(task.hub.path, task.hub.name, split=hub_split)
    feature = ds.features.get("label")
    names = getattr(feature, "names", None)
    fields = [f if f in ds.column_names else "text" for f in task.text_fields]
    rows: list[Row] = []
    for ex in ds:
        y = ex["label"]
        if isinstance(y, int):
            if y < 0:  # SNLI pairs without a gold label
                rows.append(("", None, "-"))
                continue
            y = names[y] if names else task.labels[y]
        rows.append((ex[fields[0]], ex[fields[1]] if len(fields) > 1 else None, str(y)))
    return rows
