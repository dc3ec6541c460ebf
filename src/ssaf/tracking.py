"""W&B with an offline fallback that never blocks, and the run directory's metrics.json / run_info.json."""

from __future__ import annotations

import logging
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ssaf.attention import learned_values
from ssaf.config import reachable, wandb_key_configured, wandb_server
from ssaf.settings import LoggerSettings

log = logging.getLogger(__name__)


def resolve_mode(settings: LoggerSettings) -> str:
    """'auto' -> online when a key is configured and the server answers, else offline; no W&B -> disabled.
    (``logger.mode=online`` without a key or a server is refused earlier, by ``ssaf.config``.)"""
    if settings.name != "wandb":
        return "disabled"
    if settings.mode != "auto":
        return settings.mode
    return "online" if wandb_key_configured() and reachable(*wandb_server()) else "offline"


def start_wandb(
    settings: LoggerSettings, run_dir: Path, name: str, group: str, tags: list[str], config: dict[str, Any]
) -> Any:
    """wandb.init with everything passed explicitly; None when disabled. Never prompts for a login."""
    mode = resolve_mode(settings)
    if mode == "disabled":
        return None
    import wandb

    run = wandb.init(
        project=settings.project,
        entity=settings.entity,
        name=name,
        group=group,
        tags=tags,
        config=config,
        dir=str(run_dir),
        mode=mode,  # type: ignore[arg-type]
        reinit="finish_previous",
        settings=wandb.Settings(console="off", silent=True),
    )
    log.info("W&B run %s (%s) in %s", run.name, mode, run.dir)
    return run


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and math.isfinite(v)}


class WandbCallback(TrainerCallback):
    """Logs train loss / lr, eval metrics, per-layer/head attention statistics, learned alpha/lam,
    and a heatmap of a fixed example's attention at each evaluation.

    Args:
        run: the W&B run.
        stats: returns the trainer's attention statistics of the last evaluation, per eval prefix.
        heatmap: draws a matplotlib figure of the model's attention on a fixed example, or None.
    """

    def __init__(self, run: Any, stats: Callable[[], dict[str, Any]], heatmap: Callable[[Any], Any] | None) -> None:
        self.run, self.stats, self.heatmap = run, stats, heatmap
        self._last_step = -1

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs and state.is_world_process_zero:
            self.run.log(_finite(logs), step=state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any) -> None:
        # Called once per eval split; the per-model pictures are logged once per step.
        if not state.is_world_process_zero or state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        import wandb

        payload: dict[str, Any] = {}
        for prefix, stats in self.stats().items():
            for stat, layers in stats.summary().items():
                for li, heads in enumerate(layers):
                    for hi, v in enumerate(heads):
                        payload[f"{prefix}/attn_{stat}/layer{li}/head{hi}"] = v
        for name, layers in learned_values(kw["model"]).items():
            for li, heads in enumerate(layers):
                for hi, v in enumerate(heads):
                    payload[f"learned_{name}/layer{li}/head{hi}"] = v
        if self.heatmap is not None:
            import matplotlib.pyplot as plt

            fig = self.heatmap(kw["model"])
            payload["attention_heatmap"] = wandb.Image(fig)
            plt.close(fig)
        if payload:
            self.run.log(payload, step=state.global_step)


def git_sha() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(
    data_source: str, data_origin: dict[str, str], sizes: dict[str, int], dropped: dict[str, Any], fingerprint: str
) -> dict:
    packages = ["torch", "transformers", "datasets", "evaluate", "hydra-core", "wandb", "accelerate", "ssaf"]
    versions: dict[str, str | None] = {}
    for p in packages:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
        "data": {
            "source": data_source,
            "fingerprint": fingerprint,
            "origin": data_origin,
            "sizes": sizes,
            "dropped_without_gold": dropped,
        },
        "command": " ".join(sys.argv),
    }
