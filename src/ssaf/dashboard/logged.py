"""What a W&B run logged, read from its local ``.wandb`` file (offline or online runs alike), no network.

The ``.wandb`` file is a LevelDB-style log: a 7-byte header (``:W&B``, a magic number, a version), then
32 KiB blocks of records, each ``crc32 (4 bytes) | length (2) | type (1) | payload``; a protobuf
``wandb.proto.Record`` longer than a block is split into FIRST / MIDDLE / LAST pieces. wandb >= 0.20
writes it from Go and no longer ships a Python reader, so ssaf reads the framing itself (the record
schema stays wandb's own protobuf).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEADER = 7
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class LoggedKeys:
    """The keys runs logged: history (per step), summary (last values) and config (flattened, dotted); and
    what the runs were: how many, their tasks (``task.name``) and attention transforms (``attn.transform``),
    which say what they could log (only a learned transform logs ``learned_<param>/...``)."""

    history: set[str] = field(default_factory=set)
    summary: set[str] = field(default_factory=set)
    config: set[str] = field(default_factory=set)
    runs: int = 0
    tasks: set[str] = field(default_factory=set)
    transforms: set[str] = field(default_factory=set)

    def update(self, other: LoggedKeys) -> None:
        self.history |= other.history
        self.summary |= other.summary
        self.config |= other.config
        self.runs += other.runs
        self.tasks |= other.tasks
        self.transforms |= other.transforms


def records(path: Path) -> Iterator[bytes]:
    """The payloads of a ``.wandb`` file's records, reassembled."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (no ':W&B' header)")
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left - 7
            continue
        chunk, pos = data[pos : pos + length], pos + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def read_run(path: Path) -> LoggedKeys:
    """The keys logged by one run: ``path`` is its ``.wandb`` file or the folder holding it."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = [path] if path.is_file() else sorted(path.glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"no .wandb file in {path}")
    keys, config = LoggedKeys(runs=1), dict[str, Any]()
    for d in records(files[0]):
        r = pb.Record()  # type: ignore[attr-defined]  # generated protobuf code
        r.ParseFromString(d)
        kind = r.WhichOneof("record_type")
        if kind == "history":
            keys.history |= {it.key or "/".join(it.nested_key) for it in r.history.item}
        elif kind == "summary":
            keys.summary |= {it.key or "/".join(it.nested_key) for it in r.summary.update}
        elif kind in ("run", "config"):
            items = r.run.config.update if kind == "run" else r.config.update
            for it in items:
                name = it.key or ".".join(it.nested_key)
                if not name.startswith("_"):
                    _flatten(name, json.loads(it.value_json), config)
    keys.config = set(config)
    keys.tasks = {str(config["task.name"])} if "task.name" in config else set()
    keys.transforms = {str(config["attn.transform"])} if "attn.transform" in config else set()
    return keys


def read_runs(root: Path) -> LoggedKeys:
    """The union of the keys of every W&B run under ``root`` (``<run dir>/wandb/*-run-*/``); ``runs`` is 0
    when there are none."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    keys = LoggedKeys()
    for d in sorted(p for p in root.rglob("*run-*") if p.is_dir() and any(p.glob("*.wandb"))):
        keys.update(read_run(d))
    return keys
