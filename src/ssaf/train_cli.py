"""``ssaf-train`` and the checkout's ``python train.py``: fine-tune a BERT-style encoder with sparse attention.

``ssaf-train task=sst2 attn=sparse attn.lam=-2`` takes any Hydra override (``-m`` for a multirun, ``--help``
for the groups and the whole config) and runs from any directory on the configs shipped with ssaf
(:func:`ssaf.settings.config_dir`); runs are written under the current directory (``outputs/``,
``multirun/``). ``train.py`` calls :func:`main` with the checkout's own ``conf/``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ssaf.settings import config_dir, register_configs

log = logging.getLogger("ssaf")
_started = False  # set once Hydra composed the config: a SystemExit(1) before it is a config error


def _run_stamp() -> str:
    """Run-dir name: the torchrun job id (shared by all ranks), else the start time."""
    job = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if job != "none":
        return f"torchrun-{job[:12]}"
    from datetime import datetime

    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _train(cfg: DictConfig) -> float | None:
    """One job: check the config, run the pipeline; config and data errors exit 2 (a multirun records them)."""
    global _started
    _started = True
    from ssaf.config import ConfigError, check_environment, go_offline_if_unreachable, to_settings

    go_offline_if_unreachable(cfg)  # before transformers / datasets are imported: they read it once
    hc = HydraConfig.get()
    multirun = hc.mode is not None and hc.mode.name == "MULTIRUN"
    run_dir = Path(hc.runtime.output_dir)
    try:
        # every config error now, in seconds, before torch loads (the run says what has no effect)
        check_environment(to_settings(cfg, run_dir, warn=False))
        import matplotlib

        matplotlib.use("Agg")  # the attention heatmaps logged to W&B are files, never windows
        from ssaf.console import quiet_libraries
        from ssaf.pipeline import run

        quiet_libraries()
        # resume=true looks for this command's earlier run among single runs and the jobs of multiruns
        search = [Path(hc.run.dir).parent, Path(hc.sweep.dir).parent]
        summary = run(cfg, run_dir=run_dir, overrides=list(hc.overrides.task), search=search)
    except Exception as e:
        from ssaf.data import DataError  # after the config check: importing it loads datasets (seconds)

        if not isinstance(e, (ConfigError, DataError)):
            raise
        from ssaf.summary import write_rejected

        log.error("%s", e)
        if run_dir.is_dir() and not (run_dir / "metrics.json").exists():
            # Hydra made the folder before ssaf could check the command (a refused resume removed it: nothing
            # is written for it)
            write_rejected(run_dir, str(e))
        if multirun:
            raise  # let the multirun launcher record the failed job
        sys.exit(2)
    except KeyboardInterrupt:
        # ssaf.pipeline.run has said where the run stands and how to continue it (a Ctrl-C before it began
        # leaves nothing to continue)
        sys.exit(130)  # a multirun stops too: SystemExit is not a failed job
    # The returned value lets sweepers optimise the headline metric.
    return summary.best["value"]


def main(conf: Path | None = None) -> None:
    """Compose the config from the command line with Hydra and run it; ``conf``: the config folder (default
    :func:`ssaf.settings.config_dir`)."""
    try:
        folder = conf or config_dir()
    except FileNotFoundError as e:
        print(f"ssaf-train: {e}", file=sys.stderr)
        sys.exit(2)
    OmegaConf.register_new_resolver("ssaf_stamp", _run_stamp, use_cache=True, replace=True)
    register_configs()
    # Decorated here, not at import: the config folder is known only now (the wheel's or the checkout's).
    task = hydra.main(version_base="1.3", config_path=str(folder), config_name="config")(_train)
    try:
        task()
    except SystemExit as e:
        # Hydra reports a config it cannot compose (a wrong type, an unknown key or option) and exits 1, as
        # it does for a crash; ssaf's promise is exit 2 for every config error.
        if e.code == 1 and not _started:
            sys.exit(2)
        raise
