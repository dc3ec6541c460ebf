"""Load a classification task from one source (local | hub | sample | auto) into datasets with integer labels."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ssaf import network
from ssaf.data.errors import DataError
from ssaf.data.hub import read_hub_split
from ssaf.data.local import Row, read_local_split
from ssaf.data.sample import SAMPLE_VERSION, sample_split
from ssaf.settings import DataSettings, TaskSpec

log = logging.getLogger(__name__)


@dataclass
class TaskData:
    """The splits of a task as datasets with columns ``text_a``, ``text_b`` (pairs only) and ``label``."""

    splits: dict[str, datasets.Dataset]
    source: str  # local | hub | sample
    origin: dict[str, str] = field(default_factory=dict)  # split -> file path or hub id
    dropped: dict[str, int] = field(default_factory=dict)  # split -> rows without a gold label
    versions: dict[str, str] = field(default_factory=dict)  # split -> what identifies its data (see fingerprint)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.source, self.versions)


def file_version(path: Path) -> str:
    """A local file (or a folder of files, as SenTube's splits) by its content (sha256), so that runs on
    different copies of "the same" data are told apart."""
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        h.update(file.name.encode())
        h.update(file.read_bytes())  # the data files are a few MB at most
    return h.hexdigest()[:16]


def fingerprint(source: str, versions: dict[str, str]) -> str:
    """One short id for the data of a run: ``<source>:<hash of each split's version>``."""
    h = hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(versions.items())).encode())
    return f"{source}:{h.hexdigest()[:12]}"


def resolve_data_source(source: str, data_dir: str | None, task: TaskSpec) -> str:
    """Where ``task``'s data comes from (local | hub | sample): ``source`` itself, or for ``auto`` the local
    folder when there is one, else the hub when it answers, else the demo set (with a loud warning)."""
    DataSettings(source=source, dir=data_dir)  # the schema's checks, for callers of load_task_data without a config
    if source != "auto":
        return source
    if data_dir:
        return "local"
    if task.hub is not None and network.hub_reachable():
        return "hub"
    log.warning(
        "\n%s\nNO REAL DATA FOUND for task %s: training on ssaf's small generated DEMO set.\n"
        "Point at real data with SSAF_DATA_DIR=../shared/data (or data.dir=...), or use data.source=hub\n"
        "on a machine with internet. Results on the demo set mean nothing.\n%s",
        "=" * 78,
        task.name,
        "=" * 78,
    )
    return "sample"


def to_dataset(
    rows: list[Row], task: TaskSpec, where: str, lines: list[int] | None = None
) -> tuple[datasets.Dataset, int]:
    """Rows -> dataset with integer labels in the task's order; rows labelled '-' (no gold) are dropped.

    Labels arrive as names (the readers map each format's own ids to names) and are matched by name only.
    ``lines``: each row's line in the file ``where`` (local data), so an error names ``file:line``; without
    them (hub, demo set) it names the row.
    """
    index = {name: i for i, name in enumerate(task.labels)}
    a, b, y, dropped = [], [], [], 0
    for i, (ta, tb, name) in enumerate(rows):
        at = f"{where}:{lines[i]}" if lines else f"{where}: row {i + 1}"
        if name == "-":
            dropped += 1
            continue
        if name not in index:
            raise DataError(f"{at}: unknown label {name!r}; task {task.name} labels: {task.labels}")
        label = index[name]
        if task.pair and tb is None:
            raise DataError(f"{at}: task {task.name} needs a text pair, the row has one text")
        a.append(ta)
        b.append(tb)
        y.append(label)
    if not y:
        raise DataError(f"{where}: no labelled rows")
    cols: dict[str, list] = {"text_a": a, "label": y}
    if task.pair:
        cols["text_b"] = b
    return datasets.Dataset.from_dict(cols), dropped


def cap_split(ds: datasets.Dataset, cap: int | None, seed: int | None, split: str) -> datasets.Dataset:
    """The first ``cap`` rows, after a seeded shuffle when ``seed`` is given (train); all rows when cap is None."""
    if seed is not None:
        ds = ds.shuffle(seed=seed)
    if cap is None:
        return ds
    if cap <= 0:
        raise ValueError(f"sample caps must be positive, got {cap} for split {split}")
    return ds.select(range(min(cap, len(ds))))


def load_task_data(
    task: TaskSpec,
    source: str,
    data_dir: str | None,
    splits: tuple[str, ...],
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
) -> TaskData:
    """Read ``splits`` of ``task`` from ``source``; cap sizes (train: seeded shuffle first, eval: file order)."""
    resolved = resolve_data_source(source, data_dir, task)
    out = TaskData(splits={}, source=resolved)
    for split in splits:
        lines: list[int] | None = None
        if resolved == "local":
            assert data_dir is not None
            rows, lines, path = read_local_split(Path(data_dir), task.local, split, task.labels)
            where, version = str(path), file_version(path)
        elif resolved == "hub":
            rows, version = read_hub_split(task, split)
            where = f"hub:{version.rsplit('@', 1)[0]}"
        else:
            rows, where = sample_split(task.name, task.labels, task.pair, split), f"sample:{task.name}/{split}"
            version = f"{where}/v{SAMPLE_VERSION}"
        out.versions[split] = version
        ds, dropped = to_dataset(rows, task, where, lines)
        if dropped:
            log.warning("%s: dropped %d rows without a gold label ('-')", where, dropped)
        train = split == task.train_split
        ds = cap_split(ds, max_train_samples if train else max_eval_samples, seed if train else None, split)
        out.splits[split], out.origin[split], out.dropped[split] = ds, where, dropped
    return out
