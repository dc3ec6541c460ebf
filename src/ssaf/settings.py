"""The config schema: one typed dataclass per config group, and the run's.

Registered with Hydra's ConfigStore (:func:`register_configs`), they type every key of ``conf/``: a value
of the wrong type (``attn.lam=abc``, ``seed=1.5``) or an unknown key fails when Hydra composes the config,
naming the key; a value out of range fails in ``__post_init__`` when ``ssaf.config`` turns the config into
these objects, before anything heavy loads. The components take these objects, never a DictConfig.
Defaults live here once; a group's yaml says only what differs.

Pure Python: importing it costs no torch or transformers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from ssaf import kinds, registry

SOURCES = ("auto", "local", "hub", "sample")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
LOGGERS = ("wandb", "tensorboard", "none")
MODES = ("auto", "online", "offline", "disabled")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- task


@dataclass
class HubSource:
    """A Hugging Face hub dataset: ``datasets.load_dataset(path, name)`` with our split names mapped.

    ``fields`` maps the task's text fields to the hub's columns where the names differ (SetFit's ``text``
    for ``sentence``); ``label`` is the column holding the gold label: label names, or integer ids of a
    ``ClassLabel`` (whose names are then used). Nothing is guessed: a missing column is an error.
    """

    path: str = MISSING
    name: str | None = None
    splits: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    label: str = "label"


@dataclass
class TaskSpec:
    """What a task is: its labels, text fields, splits, metric and where its data lives."""

    name: str = MISSING
    kind: str = kinds.DEFAULT  # a name in ssaf.kinds.KINDS: classification | qa
    labels: tuple[str, ...] = ()
    text_fields: tuple[str, ...] = ()
    metric_for_best: str = "accuracy"  # the headline metric (one of the kind's); on the first eval split it selects
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)  # evaluated during training; the first selects the checkpoint
    test_splits: tuple[str, ...] = ()  # evaluated once, on the selected checkpoint
    splits: tuple[str, ...] = ("train", "validation")
    local: str = MISSING  # the local layout's name (see ssaf.data.local.LAYOUTS)
    hub: HubSource | None = None
    max_seq_length: int = 128
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("labels", "text_fields", "eval_splits", "test_splits", "splits"):
            setattr(self, name, tuple(getattr(self, name)))  # OmegaConf hands over lists
        try:
            kind = kinds.get(self.kind)
        except ValueError as e:
            raise ValueError(f"task {self.name}: {e}") from None
        if self.metric_for_best not in kind.metrics:
            raise ValueError(
                f"task {self.name}: task.metric_for_best must be one of the {kind.name} metrics "
                f"({', '.join(kind.metrics)}), got {self.metric_for_best!r}"
            )
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
        if self.test_splits and not kind.test_splits:
            raise ValueError(
                f"task {self.name}: test splits are not supported for {kind.name}; set task.test_splits=[]"
            )
        if kind.labels and len(self.labels) < 2:
            raise ValueError(f"task {self.name}: a {kind.name} task needs at least 2 labels, got {self.labels}")
        if not 1 <= len(self.text_fields) <= 2:
            raise ValueError(f"task {self.name}: task.text_fields needs one or two fields, got {self.text_fields}")

    @property
    def pair(self) -> bool:
        return len(self.text_fields) == 2

    @property
    def record(self) -> kinds.Kind:
        """What its kind is (``ssaf.kinds``): data preparation, head, trainer, metrics."""
        return kinds.KINDS[self.kind]


# ----------------------------------------------------------------------------- attention


@dataclass
class AttentionSpec:
    """Which transform the attention uses, its parameters and the path that serves it (see ``ssaf.registry``).
    Saved with a model (``config.ssaf_attention``), so a saved model restores its transform; a spec an older
    ssaf saved, with ``compiled`` and ``kernel`` in place of ``backend``, still loads (``from_dict``)."""

    transform: str = "sparse"
    lam: float = 0.0
    alpha: float = 1.5
    # Which path serves the attention calls, one of registry.BACKENDS:
    # auto: where nothing needs the probabilities (no attention statistics recorded, no output_attentions), the
    #   fused Triton kernel for a sparse transform (on CUDA, where it serves the shape and passed its self-check)
    #   and softmax on torch's sdpa; otherwise the eager torch path.
    # torch: the eager torch path for every call, softmax included.
    # compiled: the torch.compile'd whole-row path for every call, for the transforms whose registry record
    #   lists it (softmax has none: auto runs it on sdpa).
    # triton: the fused kernel wherever nothing needs the probabilities: a warning where it cannot serve the
    #   inputs (the torch path serves them), an error where it fails on the device.
    # Any value but auto must be listed in the transform's record, else the config is refused.
    backend: str = "auto"

    def __post_init__(self) -> None:
        t = registry.transform(self.transform)
        registry.check_param("lam", self.lam, t)
        registry.check_param("alpha", self.alpha, t)
        if self.backend not in registry.BACKENDS:
            raise ValueError(f"attn.backend must be one of {', '.join(registry.BACKENDS)}, got {self.backend!r}")
        if self.backend != "auto" and self.backend not in t.backends:
            served = ", ".join(n for n, r in registry.TRANSFORMS.items() if self.backend in r.backends)
            own = " or ".join(f"attn.backend={b}" for b in registry.BACKENDS if b in t.backends)
            raise ValueError(
                f"attn.backend={self.backend} serves {served}, not {self.transform!r} (it runs on "
                f"{', '.join(t.backends)}); use attn.backend=auto (its fastest path) or {own}"
            )

    @property
    def record(self) -> registry.Transform:
        return registry.TRANSFORMS[self.transform]

    @property
    def learned(self) -> bool:
        return self.record.learned

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(AttentionSpec)}

    @classmethod
    def from_config(cls, config: Any) -> AttentionSpec:
        """The spec a (transformers) model config carries (one an older ssaf saved too)."""
        spec = getattr(config, "ssaf_attention", None)
        if spec is None:
            raise ValueError(
                f"config of type {type(config).__name__} has no ssaf_attention; build the model with "
                "ssaf.attention.ssaf_config(base_config, AttentionSpec(...))"
            )
        return cls.from_dict(spec)

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> AttentionSpec:
        """The spec of a ``to_dict()``, also one an older ssaf saved, whose ``compiled`` and ``kernel`` stood
        where ``backend`` is now: read, once, as the backend they asked for (``registry.backend_of``)."""
        values = dict(saved)
        compiled, kernel = values.pop("compiled", None), values.pop("kernel", None)
        if compiled is not None or kernel is not None:
            if "backend" in values:
                raise TypeError("AttentionSpec takes backend, or the compiled and kernel it replaced, not both")
            values["backend"] = registry.backend_of(bool(compiled), kernel or "auto")
        return cls(**values)


# Keys an older ssaf read, retired: the schema still holds them (AttnSettings), unset, so that a command line or
# a preset that sets one composes and then fails in ssaf.config.check_unread naming what replaced it, rather
# than with Hydra's "Key 'kernel' not in 'AttnSettings'", and so that an older run's recorded config still fits
# the schema (ssaf.resume). The price: they show, null, in --help and in every run's resolved config.
RETIRED = ("attn.compiled", "attn.kernel")


def retired(key: str, value: Any) -> str:
    """The error for a retired key set to ``value``: what replaced it and the setting to use."""
    backend = registry.backend_of(value is True, "auto") if key == "attn.compiled" else str(value)
    use = f"attn.backend={backend}" if backend in registry.BACKENDS else "attn.backend=auto"
    said = str(value).lower() if isinstance(value, bool) else value  # as the command line spells it
    return f"{key}={said}: {key} was replaced by attn.backend ({'|'.join(registry.BACKENDS)}); use {use}"


@dataclass
class AttnSettings(AttentionSpec):
    """The ``attn`` group: an attention spec under a name (the option's, used in run folders and reports)."""

    name: str = MISSING
    compiled: Any = None  # retired (RETIRED): attn.backend=compiled
    kernel: Any = None  # retired (RETIRED): attn.backend


# ----------------------------------------------------------------------------- model, trainer, logger, data


PACKAGED = "packaged:"  # model.source: a Python module with get_model_path() that ships the model


@dataclass
class ModelSpec:
    """Where the weights come from and whether to use them (``pretrained=False``: random init, same shape)."""

    name: str = MISSING
    source: str = MISSING  # "packaged:<python module with get_model_path()>", a hub id, or a local directory
    pretrained: bool = True
    max_positions: int = 512
    config_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerSettings:
    learning_rate: float = 2e-5
    attn_learning_rate: float | None = None  # learned alpha / lam; None: learning_rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_size: int = 16
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    epochs: float = 3
    max_steps: int = -1  # > 0 overrides epochs
    max_seq_length: int = 128
    group_by_length: bool = False
    precision: str = "auto"
    eval_every: int = 500  # steps between evaluations and checkpoints; 0 = once per epoch
    report_every: int = 50
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # after a run completes; resume needs them only while it is unfinished
    stats_every_eval: bool = True
    stats_sample_every: int = 1
    max_train_samples: int | None = None
    max_eval_samples: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "max_seq_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.stats_sample_every < 1:
            raise ValueError(
                f"trainer.stats_sample_every must be >= 1 (1 = every batch), got {self.stats_sample_every}"
            )
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"trainer.{name} must be >= 1 or null (all of the split), got {value}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"trainer.learning_rate must be > 0, got {self.learning_rate}")
        if self.attn_learning_rate is not None and not self.attn_learning_rate > 0:
            raise ValueError(
                "trainer.attn_learning_rate must be > 0 or null (= trainer.learning_rate), "
                f"got {self.attn_learning_rate}"
            )
        if not 0 <= self.weight_decay < 1:
            raise ValueError(f"trainer.weight_decay must be in [0, 1), got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(
                f"trainer.warmup_ratio must be in [0, 1) (a fraction of the steps), got {self.warmup_ratio}"
            )
        if self.max_steps <= 0 and not self.epochs > 0:
            raise ValueError("set trainer.epochs > 0 or trainer.max_steps > 0")
        if self.eval_every < 0 or self.report_every < 1:
            raise ValueError("trainer.eval_every must be >= 0 (0 = every epoch) and trainer.report_every >= 1")
        if self.save_total_limit < 1:
            raise ValueError(
                f"trainer.save_total_limit must be >= 1 (the best and the newest), got {self.save_total_limit}"
            )


@dataclass
class LoggerSettings:
    name: str = "wandb"  # wandb | tensorboard | none
    mode: str = "auto"  # for wandb: auto | online | offline | disabled
    project: str = "ssaf"
    entity: str | None = None
    log_heatmaps: bool = True

    def __post_init__(self) -> None:
        if self.name not in LOGGERS:
            raise ValueError(f"logger must be one of {', '.join(LOGGERS)}, got {self.name!r}")
        if self.mode not in MODES:
            raise ValueError(f"logger.mode must be one of {', '.join(MODES)}, got {self.mode!r}")


@dataclass
class DataSettings:
    source: str = "auto"  # auto | local | hub | sample
    dir: str | None = None  # the local data root (e.g. ../shared/data)
    num_workers: int = 0  # DataLoader worker processes

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source == "local" and not self.dir:
            raise ValueError(
                "data.source=local needs a data folder: set SSAF_DATA_DIR=<folder> (e.g. ../shared/data) "
                "or data.dir=..."
            )
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")


# ----------------------------------------------------------------------------- the run


@dataclass
class RunConfig:
    """The whole config of ``train.py`` (conf/config.yaml): one field per group, and the run's own keys."""

    task: TaskSpec = MISSING
    attn: AttnSettings = MISSING
    model: ModelSpec = MISSING
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    logger: LoggerSettings = field(default_factory=LoggerSettings)
    data: DataSettings = field(default_factory=DataSettings)
    seed: int = 42
    # false | true (the newest earlier run of the same command) | a run directory. Any, not str: a str field
    # turns the yaml's false into the string 'False', which `train.py --help` then shows quoted.
    resume: Any = False

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2^32), got {self.seed} (runs are never unseeded)")
        # Hydra reads true and false (any case) as booleans: a string is a run directory.
        if not isinstance(self.resume, (bool, str)) or (isinstance(self.resume, str) and not self.resume.strip()):
            raise ValueError(f"resume must be true, false or a run directory, got {self.resume!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_registered = False


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore as ``ssaf_schema`` (conf/config.yaml's first default).
    Idempotent; ``train.py``, the CLIs and tests that compose the config call it."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="ssaf_schema", node=RunConfig)
    _registered = True


def config_dir() -> Path:
    """The Hydra config folder: ``ssaf/conf/`` inside an installed wheel (setup.py ships the checkout's
    ``conf/`` there), else the checkout's top-level ``conf/`` (an editable install, ``PYTHONPATH=src``): the
    one copy both are made from. ``ssaf-train`` and ``ssaf-dashboard`` read it (``train.py`` passes its own
    checkout's ``conf/``)."""
    package = Path(__file__).resolve().parent
    tried = (package / "conf", package.parents[1] / "conf")  # wheel: site-packages/ssaf/conf; checkout: src/..
    for folder in tried:
        if (folder / "config.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"no config.yaml in {' or '.join(map(str, tried))}: reinstall ssaf (pip install .) or run it from its checkout"
    )
