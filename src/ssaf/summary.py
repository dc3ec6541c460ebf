"""What a run is and what it produced: the schema of ``metrics.json``, written by the pipeline and read
back by the report (which needs nothing else from a run directory).

Pure Python (no torch, no transformers): the report and its tests use it on their own.

Versions of ``metrics.json`` (``schema``): 1, the first; 2 adds ``routes`` (which attention paths served the
run); 3 replaces ``attn.compiled`` and ``attn.kernel`` by ``attn.backend``. Every version in ``READABLE`` reads
back; what an older file lacks is None, and an older ``attn`` reads as the backend it asked for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ssaf import registry

SCHEMA = 3  # the version written
READABLE = (1, 2, 3)  # the versions read
STATUSES = ("running", "completed", "failed", "interrupted", "rejected")


@dataclass(frozen=True)
class AttentionInfo:
    """The attention of a run: its config option, transform, the parameter it varies and whether it learns."""

    name: str  # the attn config option (softmax, sparse, ...)
    transform: str
    param: str | None = None  # lam | alpha | None
    value: float | None = None  # the fixed value, or the learned parameter's start
    learned: bool = False
    own_lr: float | None = None  # trainer.attn_learning_rate of a learned attention
    backend: str = "auto"  # attn.backend, as configured (what served the calls: RunSummary.routes)

    @property
    def label(self) -> str:
        """How reports name it: a learned attention at its own learning rate is another attention."""
        return self.name + (f" (lr {self.own_lr:g})" if self.learned and self.own_lr is not None else "")


# The paths an attention call can take (ssaf.attention.route), as the summary names them.
ROUTES = {"fused": "fused kernel", "sdpa": "sdpa", "compiled": "compiled", "torch": "torch path"}


@dataclass(frozen=True)
class AttentionRoutes:
    """Which paths served a run's attention calls, counted by the process that writes the record (rank 0 of a
    distributed run) since it started (a resumed run: since it resumed).

    ``calls``: path (a key of ``ROUTES``) -> calls it served. ``fallbacks``: reason -> calls that did not take
    the fast path their spec asks for (the fused kernel, sdpa) for that reason: attention statistics and
    ``output_attentions`` need the probabilities; inputs the kernel does not serve; a device where it failed.
    """

    calls: dict[str, int] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """One line, e.g. ``fused kernel 96 calls, torch path 24 calls (attention statistics ...: 24)``."""
        if not self.calls:
            return "no attention calls"
        order = [p for p in ROUTES if p in self.calls] + sorted(set(self.calls) - set(ROUTES))
        text = ", ".join(f"{ROUTES.get(p, p)} {self.calls[p]} calls" for p in order)
        if self.fallbacks:
            text += " (" + "; ".join(f"{why}: {n}" for why, n in sorted(self.fallbacks.items())) + ")"
        return text


@dataclass(frozen=True)
class DataInfo:
    """Where the data came from; ``fingerprint`` identifies the data itself (file hashes or hub revision)."""

    source: str  # local | hub | sample
    fingerprint: str
    origin: dict[str, str] = field(default_factory=dict)  # split -> file or hub id
    sizes: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, Any] = field(default_factory=dict)

    @property
    def demo(self) -> bool:
        """ssaf's generated demo set: a smoke test, never a result."""
        return self.source == "sample"


@dataclass(frozen=True)
class Budget:
    """Every cap on training and evaluation: runs with different budgets are never averaged together."""

    max_train_samples: int | None
    epochs: float
    max_steps: int
    max_seq_length: int
    learning_rate: float
    batch_size: int  # per process and optimiser step (the batch times gradient accumulation)
    group_by_length: bool = False
    max_eval_samples: int | None = None
    world_size: int = 1  # processes training data-parallel (torchrun); 1 in records that predate it
    global_batch: int | None = None  # examples per optimiser step: batch_size * world_size (filled in if None)

    def __post_init__(self) -> None:
        product = self.batch_size * self.world_size
        if self.global_batch is None:
            object.__setattr__(self, "global_batch", product)
        elif self.global_batch != product:
            raise ValueError(
                f"budget: global_batch={self.global_batch} is not batch_size x world_size = "
                f"{self.batch_size} x {self.world_size}"
            )

    @property
    def label(self) -> str:
        """The caps in a few words, e.g. ``8000 train ex, 1 ep, len 64, lr 5e-05, batch 32`` (``batch 32 = 2 x 16``
        for two processes: a run's global batch, so runs at different ones are never one group)."""
        size = f"{self.max_steps} steps" if self.max_steps > 0 else f"{self.epochs:g} ep"
        parts = [
            f"{self.max_train_samples or 'all'} train ex",
            size,
            f"len {self.max_seq_length}",
            f"lr {self.learning_rate:g}",
            f"batch {self.global_batch}" + (f" = {self.world_size} x {self.batch_size}" if self.world_size > 1 else ""),
        ]
        if self.max_eval_samples:
            parts.append(f"{self.max_eval_samples} eval ex")
        if self.group_by_length:
            parts.append("length-grouped")
        return ", ".join(parts)


@dataclass(frozen=True)
class Timing:
    """Wall time of the training that produced the model, summed over the segments of a resumed run."""

    runtime_s: float
    segments: list[float]  # each process's share: up to the checkpoint it was resumed from, then its own
    steps: int
    epochs: float
    train_loss: float | None
    examples_per_s: float | None
    seconds_per_epoch: float | None
    final_eval_runtime_s: float
    final_eval_reused: bool  # the last evaluation during training was the best checkpoint's: not repeated


@dataclass
class RunSummary:
    """One run: identity (task, attention, model, seed, data, budget) and results."""

    status: str
    task: str
    kind: str  # a name in ssaf.kinds.KINDS (its metrics' scale: Kind.scale)
    metric: str  # the headline metric: accuracy | f1
    splits: list[str]  # evaluated splits; the first selects the checkpoint
    attn: AttentionInfo
    model: str
    pretrained: bool
    seed: int
    budget: Budget
    run_dir: str
    data: DataInfo | None = None  # None until the data is loaded
    test_splits: list[str] = field(default_factory=list)  # evaluated once, on the selected checkpoint
    error: str | None = None
    final: dict[str, float] = field(default_factory=dict)  # eval_<split>_<metric>
    best: dict[str, Any] = field(default_factory=dict)  # metric, value, checkpoint, step
    attention: dict[str, Any] = field(default_factory=dict)  # eval_<split> -> per layer/head statistics
    learned: dict[str, list[list[float]]] = field(default_factory=dict)
    train: Timing | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    routes: AttentionRoutes | None = None  # None until the run ends or stops; schema 1 never recorded it
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def all_splits(self) -> list[str]:
        return [*self.splits, *self.test_splits]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        """The summary of a ``metrics.json`` of any ``READABLE`` schema; ValueError naming what is missing or
        unknown."""
        if d.get("schema") not in READABLE:
            raise ValueError(
                f"metrics.json schema {d.get('schema')!r}, this ssaf reads schemas "
                f"{', '.join(map(str, READABLE))} (a newer ssaf writes a higher one: upgrade to read it)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown fields in metrics.json: {', '.join(unknown)}")
        parts = {
            "attn": AttentionInfo,
            "budget": Budget,
            "data": DataInfo,
            "train": Timing,
            "routes": AttentionRoutes,
        }
        values = dict(d)
        if isinstance(values.get("attn"), dict) and values["schema"] < 3:
            attn = dict(values["attn"])
            attn["backend"] = registry.backend_of(attn.pop("compiled", False), attn.pop("kernel", "auto"))
            values["attn"] = attn
        try:
            for name, typ in parts.items():
                if values.get(name) is not None:
                    values[name] = typ(**values[name])
            return cls(**values)
        except TypeError as e:
            raise ValueError(f"metrics.json does not match the schema: {e}") from e


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    write_json(run_dir / "metrics.json", summary.to_dict())


def read_summary(run_dir: Path) -> RunSummary:
    """The run's summary; FileNotFoundError without metrics.json, ValueError when it cannot be read."""
    path = run_dir / "metrics.json"
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    if d.get("status") == "rejected" and d.get("schema") in READABLE and "task" not in d:
        raise ValueError(f"the command was rejected: {d.get('error')}")
    return RunSummary.from_dict(d)


def write_rejected(run_dir: Path, error: str) -> None:
    """Mark a run directory whose command failed validation (Hydra creates the folder before ssaf runs)."""
    write_json(run_dir / "metrics.json", {"schema": SCHEMA, "status": "rejected", "error": error})
