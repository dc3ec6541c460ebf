"""Config -> typed settings, in one place, validated before anything heavy loads.

Hydra already rejects unknown keys and unknown group options (with the list of options). This module
checks values: lam / alpha ranges, sequence length against the model's limit, eval splits against the
task's splits, data source, precision, caps; each error names the value and the valid choices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssaf.attention import AttentionSpec
from ssaf.data import SOURCES, HubSource, TaskSpec
from ssaf.models import ModelSpec
from ssaf.tracking import LoggerSettings
from ssaf.training import TrainerSettings

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot run; the message says what is wrong and what is valid."""


@dataclass(frozen=True)
class DataSettings:
    source: str = "auto"
    dir: str | None = None
    num_workers: int = 0


@dataclass(frozen=True)
class RunSettings:
    task: TaskSpec
    attn: AttentionSpec
    attn_name: str
    model: ModelSpec
    trainer: TrainerSettings
    logger: LoggerSettings
    data: DataSettings
    seed: int
    resume: bool | str
    run_dir: Path


def _only(cls: type, d: dict[str, Any], group: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {group}: {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    return d


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def task_spec(d: dict[str, Any]) -> TaskSpec:
    d = dict(d)
    hub = d.pop("hub", None)
    return TaskSpec(**_tuples(_only(TaskSpec, d, "task")), hub=HubSource(**hub) if hub else None)


def settings(cfg: DictConfig, run_dir: str | Path) -> RunSettings:
    """Typed, validated settings for one run; raises ConfigError (a ValueError) with a clear message."""
    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    try:
        attn_cfg = dict(c["attn"])
        attn_name = attn_cfg.pop("name")
        attn = AttentionSpec(**attn_cfg)
        task = task_spec(c["task"])
        model = ModelSpec(**_only(ModelSpec, c["model"], "model"))
        trainer = TrainerSettings(**_only(TrainerSettings, c["trainer"], "trainer"))
        logger = LoggerSettings(**_only(LoggerSettings, c["logger"], "logger"))
        data = DataSettings(**_only(DataSettings, c["data"], "data"))
    except TypeError as e:  # a missing or misspelt field in a yaml file
        raise ConfigError(f"config does not match its schema: {e}") from e
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if data.source not in SOURCES:
        raise ConfigError(f"data.source must be one of {', '.join(SOURCES)}, got {data.source!r}")
    if trainer.max_seq_length > model.max_positions:
        raise ConfigError(
            f"trainer.max_seq_length={trainer.max_seq_length} exceeds the {model.max_positions} positions of "
            f"model {model.name}; use a value <= {model.max_positions}"
        )
    if trainer.attn_learning_rate is not None and not attn.learned:
        # A warning, not an error: a multirun over attn=softmax,learned_alpha shares the override.
        log.warning(
            "trainer.attn_learning_rate=%g has no effect: attn=%s learns no alpha or lam",
            trainer.attn_learning_rate,
            attn_name,
        )
    if c.get("seed") is None:
        raise ConfigError("seed must be an integer (runs are never unseeded)")
    return RunSettings(
        task=task,
        attn=attn,
        attn_name=attn_name,
        model=model,
        trainer=trainer,
        logger=logger,
        data=data,
        seed=int(c["seed"]),
        resume=c.get("resume", False),
        run_dir=Path(run_dir),
    )
