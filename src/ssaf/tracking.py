"""Trackers (W&B with an offline fallback that never blocks, or TensorBoard), the callback that feeds them,
and the run directory's run_info.json."""

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
from typing import Any, Protocol

import torch
import yaml
from transformers import TrainerCallback

from ssaf import keys, network
from ssaf.attention import learned_values
from ssaf.config import wandb_key_configured, wandb_server
from ssaf.settings import LoggerSettings

log = logging.getLogger(__name__)


def resolve_mode(settings: LoggerSettings) -> str:
    """W&B's mode: 'auto' -> online when a key is configured and the server answers, else offline.
    (``logger.mode=online`` without a key or a server is refused earlier, by ``ssaf.config``.)"""
    if settings.mode != "auto":
        return settings.mode
    return "online" if wandb_key_configured() and network.reachable(*wandb_server()) else "offline"


class Tracker(Protocol):
    """Where a run's numbers and pictures go (W&B or TensorBoard); the keys are ``ssaf.keys``' names."""

    def scalars(self, values: dict[str, float], step: int) -> None: ...
    def figure(self, key: str, fig: Any, step: int) -> None: ...
    def predictions(self, split: str, columns: list[str], rows: list[list[Any]]) -> None: ...
    def finish(self, final: dict[str, float] | None) -> None:
        """The run ends: ``final`` holds the selected checkpoint's metrics, or None when it stopped early."""


def start_tracker(
    settings: LoggerSettings, run_dir: Path, name: str, group: str, tags: list[str], config: dict[str, Any]
) -> Tracker | None:
    """The run's tracker, started; None for ``logger=none`` or ``logger.mode=disabled``."""
    if settings.name == "none" or settings.mode == "disabled":
        return None
    if settings.name == "tensorboard":
        return TensorBoardTracker(run_dir / "tensorboard", name, config)
    return WandbTracker.start(settings, run_dir, name, group, tags, config)


class WandbTracker:
    """A W&B run, started with everything passed explicitly; never prompts for a login."""

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def start(
        cls, settings: LoggerSettings, run_dir: Path, name: str, group: str, tags: list[str], config: dict[str, Any]
    ) -> WandbTracker:
        import wandb

        mode = resolve_mode(settings)
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
        return cls(run)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def figure(self, key: str, fig: Any, step: int) -> None:
        import wandb

        self.run.log({key: wandb.Image(fig)}, step=step)

    def predictions(self, split: str, columns: list[str], rows: list[list[Any]]) -> None:
        import wandb

        self.run.log({f"predictions/{split}": wandb.Table(columns=list[str | int](columns), data=rows)})

    def finish(self, final: dict[str, float] | None) -> None:
        if final is not None:
            self.run.summary.update({keys.final(k): v for k, v in _finite(final).items()})
        self.run.finish(exit_code=0 if final is not None else 1)


class TensorBoardTracker:
    """TensorBoard event files in ``<run dir>/tensorboard`` (``tensorboard --logdir outputs``): the same
    scalars under the same keys as W&B, the heatmaps as images, the final metrics under ``final/`` and the
    run's configuration as text.

    transformers' ``report_to="tensorboard"`` would log the Trainer's scalars only, through a second writer;
    one writer for everything keeps the keys identical to W&B's (tested against the dashboard spec).
    """

    def __init__(self, log_dir: Path, name: str, config: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch's writer needs the tensorboard package
            raise ImportError(
                "logger=tensorboard needs the tensorboard package: pip install 'ssaf[tensorboard]'"
            ) from e
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.step = 0
        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "\n```", 0)
        log.info("TensorBoard run %s in %s", name, log_dir)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.step = max(self.step, step)
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def figure(self, key: str, fig: Any, step: int) -> None:
        self.writer.add_figure(key, fig, step, close=False)

    def predictions(self, split: str, columns: list[str], rows: list[list[Any]]) -> None:
        lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
        lines += [" | ".join(str(c).replace("|", "/") for c in row) for row in rows]
        self.writer.add_text(f"predictions/{split}", "\n".join(lines), self.step)

    def finish(self, final: dict[str, float] | None) -> None:
        for k, v in _finite(final or {}).items():
            self.writer.add_scalar(keys.final(k), v, self.step)
        self.writer.close()


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and math.isfinite(v)}


class TrackingCallback(TrainerCallback):
    """Logs train loss / lr, eval metrics, per-layer/head attention statistics, learned alpha/lam,
    and a heatmap of a fixed example's attention at each evaluation, to a :class:`Tracker`.

    Args:
        tracker: where the values go.
        stats: returns the trainer's attention statistics per eval prefix (each split's is stored before
            its evaluation calls ``on_evaluate``).
        heatmap: draws a matplotlib figure of the model's attention on a fixed example, or None.
        on_curve: whether the trainer's evaluations are points of the training curve now; the final
            evaluation of the selected checkpoint is not, and reaches the tracker through ``finish``.
    """

    def __init__(
        self,
        tracker: Tracker,
        stats: Callable[[], dict[str, Any]],
        heatmap: Callable[[Any], Any] | None,
        on_curve: Callable[[], bool] = lambda: True,
    ) -> None:
        self.tracker, self.stats, self.heatmap, self.on_curve = tracker, stats, heatmap, on_curve
        self._last_step = -1

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs and state.is_world_process_zero:
            self.tracker.scalars(_finite(logs), state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not self.on_curve():
            return
        # Called once per eval split, after that split's statistics are stored: its own per-head values.
        payload: dict[str, float] = {}
        for prefix, stats in self.stats().items():
            if keys.stat_mean(prefix, keys.STATS[0]) not in (metrics or {}):
                continue  # another split's, from this or an earlier evaluation
            for stat, layers in stats.summary().items():
                for li, heads in enumerate(layers):
                    for hi, v in enumerate(heads):
                        payload[keys.head_stat(prefix, stat, li, hi)] = v
        if state.global_step != self._last_step:  # the per-model values and picture, once per step
            self._last_step = state.global_step
            for name, layers in learned_values(kw["model"]).items():
                for li, heads in enumerate(layers):
                    for hi, v in enumerate(heads):
                        payload[keys.learned(name, li, hi)] = v
            if self.heatmap is not None:
                import matplotlib.pyplot as plt

                fig = self.heatmap(kw["model"])
                self.tracker.figure(keys.HEATMAP, fig, state.global_step)
                plt.close(fig)
        if payload:
            self.tracker.scalars(payload, state.global_step)


def git_sha() -> str | None:
    """The commit of the ssaf checkout this code runs from; None for an installed wheel. The checkout is
    the folder two levels above the package (src layout) only when git says it is the top of a work tree:
    a wheel's ``<venv>/lib/python3.11`` may sit inside some other repository, whose commit is not ours."""
    root = Path(__file__).resolve().parents[2]
    try:
        git = ["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"]
        out = subprocess.run(git, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None
    return lines[1]


def run_info(
    data_source: str,
    data_origin: dict[str, str],
    sizes: dict[str, int],
    dropped: dict[str, int],
    fingerprint: str,
    answer_checks: dict[str, dict[str, int]] | None = None,
) -> dict:
    """What ran where on what data: ``dropped`` counts each split's rows without a gold label;
    ``answer_checks`` (QA) what reading checked, repaired and dropped per split."""
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
            **({"answer_checks": answer_checks} if answer_checks else {}),
        },
        "command": " ".join(sys.argv),
    }
