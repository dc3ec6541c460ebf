"""Resuming a run: which earlier run a command continues, whether it may, and moving into that run's folder.

A run is one folder, whatever it takes to finish it. ``resume=<dir>`` names the run; ``resume=true`` takes
the newest earlier run whose run-defining settings are this command's (see :data:`FREE`) that completed or
left a checkpoint, looking under the single-run and the multirun roots: the job of a sweep is found by
the same overrides run alone, and a sweep launched again with ``resume=true`` finds each of its jobs (a
job that never ran starts). Either way a completed run is skipped (its record untouched), an unfinished
one continues in its own folder from its newest complete checkpoint, and a command whose run-defining
settings differ from the run's ``.hydra/config.yaml`` is refused, naming each difference, before
anything is written.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssaf.config import ConfigError
from ssaf.settings import RunConfig
from ssaf.summary import RunSummary, read_summary
from ssaf.training import last_complete_checkpoint

log = logging.getLogger(__name__)

CONFIG = Path(".hydra") / "config.yaml"  # the run's resolved config (ssaf.pipeline writes it resolved)
# What a resume may change: how a run is watched and paced, never what it trains or on what. Every other
# key (task, attention and its parameters, model, seed, data, the trainer's budget and optimiser) defines
# the run; a key a later ssaf adds defines it too until it is listed here.
FREE = frozenset(
    {
        "resume",
        "logger",
        "data.num_workers",
        "attn.backend",  # every backend computes the same transform
        "attn.kernel",  # retired (what attn.backend replaced): in the configs of runs an older ssaf made
        "attn.compiled",
        "trainer.eval_batch_size",
        "trainer.report_every",
        "trainer.save_total_limit",
        "trainer.keep_checkpoints",
        "trainer.stats_every_eval",
        "trainer.stats_sample_every",
    }
)


class ResumeError(ConfigError):
    """A resume that cannot go ahead; nothing has been written."""


@dataclass(frozen=True)
class Earlier:
    """An earlier run that a command continues."""

    dir: Path
    summary: RunSummary | None  # its metrics.json; None when missing or unreadable
    checkpoint: str | None  # its newest complete checkpoint

    @property
    def completed(self) -> bool:
        return self.summary is not None and self.summary.status == "completed"


def run_defining(config: dict[str, Any]) -> dict[str, Any]:
    """The run-defining settings of a resolved config, flat (``trainer.max_steps``), without :data:`FREE`."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if prefix.rstrip(".") in FREE:
            return
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix.rstrip(".")] = node

    walk(config, "")
    if flat.get("data.dir"):  # the same folder however it was spelled (relative to the launch folder)
        flat["data.dir"] = str(Path(flat["data.dir"]).resolve())
    return flat


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Each run-defining setting on which two resolved configs differ, as ``key: this command A, the run B``
    (a key one side lacks, such as an entry of ``model.config_overrides``, differs too)."""
    a, b = run_defining(ours), run_defining(theirs)
    missing = "(not set)"
    return [
        f"{k}: this command {a.get(k, missing)!r}, the run {b.get(k, missing)!r}"
        for k in sorted(a.keys() | b.keys())
        if k not in a or k not in b or a[k] != b[k]
    ]


def recorded_config(run_dir: Path) -> dict[str, Any]:
    """A run's config as its ``.hydra/config.yaml`` records it, over today's schema (a setting added since
    takes its default, as the run had it) and resolved (a run of an ssaf that saved it with interpolations:
    they resolve in today's environment; one that no longer resolves is compared as written)."""
    cfg = OmegaConf.load(run_dir / CONFIG)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    except Exception as e:  # a key or type today's schema refuses: it cannot be this ssaf's command
        raise ResumeError(f"{run_dir / CONFIG} does not fit this ssaf's config schema ({e})") from e
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        resolved = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(resolved, dict):
        raise ResumeError(f"{run_dir / CONFIG} does not hold a config mapping")
    return {str(k): v for k, v in resolved.items()}


def earlier_run(run_dir: Path) -> Earlier:
    try:
        summary: RunSummary | None = read_summary(run_dir)
    except (OSError, ValueError):
        summary = None
    return Earlier(run_dir, summary, last_complete_checkpoint(run_dir / "checkpoints"))


def find_earlier(resume: bool | str, config: dict[str, Any], run_dir: Path, roots: Sequence[Path]) -> Earlier | None:
    """The run that this command continues, or None to start a new one.

    Args:
        resume: False, True (the newest earlier run of the same settings under ``roots``) or a run folder.
        config: this command's resolved config.
        run_dir: the folder made for this command (never a candidate unless named).
        roots: folders whose run folders, one or two levels down (``<root>/<time>``,
            ``<multirun root>/<time>/<job>``), ``resume=true`` searches.

    Raises ResumeError, naming the fix, when a named run cannot be continued by this command.
    """
    if resume is False:
        return None
    if resume is not True:
        path = Path(resume)
        if not (path / CONFIG).is_file():
            raise ResumeError(
                f"resume={resume}: not a run folder of train.py (no {CONFIG} there); pass the folder a run "
                "wrote (outputs/<task>/<attn>/<time>, or a multirun's job folder)"
            )
        diffs = differences(config, recorded_config(path))
        if diffs:
            raise ResumeError(
                f"resume={resume}: this command's run-defining settings differ from that run's {CONFIG}: "
                + "; ".join(diffs)
                + ". Resume with the run's own settings, or drop resume= to start a new run"
            )
        found = earlier_run(path)
        if not found.completed and found.checkpoint is None:
            raise ResumeError(
                f"resume={resume}: the run did not complete and has no complete checkpoint-* under "
                f"{path / 'checkpoints'}; nothing to resume: drop resume= to start it again"
            )
        return found
    here = run_dir.resolve()
    matches = []
    for candidate in run_folders(roots):
        if candidate.resolve() == here:
            continue
        try:
            if differences(config, recorded_config(candidate)):
                continue
        except Exception as e:  # an unreadable folder is not this command's run; say so and go on
            log.warning("resume=true: skipping %s (%s: %s)", candidate, e.__class__.__name__, e)
            continue
        found = earlier_run(candidate)
        if found.completed or found.checkpoint is not None:
            matches.append(((candidate / CONFIG).stat().st_mtime, str(candidate), found))
    if not matches:
        log.info(
            "resume=true: no earlier run with these settings under %s: starting it",
            ", ".join(str(r) for r in dict.fromkeys(Path(r).resolve() for r in roots)),
        )
        return None
    return max(matches, key=lambda m: (m[0], m[1]))[2]


def run_folders(roots: Sequence[Path]) -> Iterator[Path]:
    """Folders with a ``.hydra/config.yaml`` one or two levels under each root."""
    seen: set[Path] = set()
    for root in roots:
        for pattern in ("*", "*/*"):
            for config in Path(root).glob(f"{pattern}/{CONFIG}"):
                folder = config.parent.parent
                if folder.resolve() not in seen:
                    seen.add(folder.resolve())
                    yield folder


# ----------------------------------------------------------------------------- the folder Hydra made


def _handlers_into(folder: Path) -> list[logging.FileHandler]:
    """The root logger's file handlers that write into ``folder`` (Hydra's ``<job>.log``)."""
    where = folder.resolve()
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().parent == where
    ]


def _main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _remove(folder: Path) -> None:
    """Remove a folder Hydra made for this command when it holds only Hydra's files (``.hydra/``, logs)."""
    if not folder.is_dir() or not _main_process():
        return
    extra = [p.name for p in folder.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if extra:
        log.warning("%s holds %s besides Hydra's files: left in place", folder, ", ".join(sorted(extra)))
        return
    shutil.rmtree(folder, ignore_errors=True)


def discard(fresh: Path, earlier: Path | None = None) -> None:
    """A command that writes nothing (a refused resume, a completed run skipped): the folder Hydra made for
    it is removed, its log with it (messages still reach the console). Nothing when it is ``earlier``."""
    if earlier is not None and fresh.resolve() == earlier.resolve():
        return
    for h in _handlers_into(fresh):
        logging.getLogger().removeHandler(h)
        h.close()
    _remove(fresh)


def move_in(fresh: Path, earlier: Path) -> None:
    """Continue in ``earlier``'s folder: the log Hydra opened in ``fresh`` goes on at the end of the run's
    own log (what it held so far copied there first), and ``fresh`` is removed."""
    if fresh.resolve() == earlier.resolve():
        return
    for h in _handlers_into(fresh):
        h.acquire()
        try:
            h.close()
            old, new = Path(h.baseFilename), earlier.resolve() / Path(h.baseFilename).name
            if _main_process() and old.is_file():
                with new.open("a") as f:
                    f.write(old.read_text())
            h.baseFilename, h.mode = str(new), "a"  # reopened there at the next record
        finally:
            h.release()
    _remove(fresh)
