"""Fine-tune a BERT-style encoder with sparse attention: ``python train.py task=sst2 attn=sparse attn.lam=-2``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ssaf.settings import register_configs

log = logging.getLogger("ssaf")
_started = False  # set once Hydra composed the config: a SystemExit(1) before it is a config error


def _run_stamp() -> str:
    """Run-dir name: the torchrun job id (shared by all ranks), else the start time."""
    job = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if job != "none":
        return f"torchrun-{job[:12]}"
    from datetime import datetime

    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    global _started
    _started = True
    from ssaf.config import ConfigError, check_environment, go_offline_if_unreachable, settings

    go_offline_if_unreachable(cfg)  # before transformers / datasets are imported: they read it once
    hc = HydraConfig.get()
    multirun = hc.mode is not None and hc.mode.name == "MULTIRUN"
    run_dir = Path(hc.runtime.output_dir)
    try:
        # every config error now, in seconds, before torch loads (the run says what has no effect)
        check_environment(settings(cfg, run_dir, warn=False))
        import matplotlib

        matplotlib.use("Agg")  # the attention heatmaps logged to W&B are files, never windows
        from ssaf.console import quiet_libraries
        from ssaf.pipeline import run

        quiet_libraries()
        summary = run(cfg, run_dir=run_dir, overrides=list(hc.overrides.task))
    except Exception as e:
        from ssaf.data import DataError  # after the config check: importing it loads datasets (seconds)

        if not isinstance(e, (ConfigError, DataError)):
            raise
        from ssaf.summary import write_rejected

        log.error("%s", e)
        if not (run_dir / "metrics.json").exists():
            write_rejected(run_dir, str(e))  # Hydra made the folder before ssaf could check the command
        if multirun:
            raise  # let the multirun launcher record the failed job
        sys.exit(2)
    except KeyboardInterrupt:
        from ssaf.training import last_complete_checkpoint

        checkpoint = last_complete_checkpoint(run_dir / "checkpoints")
        saved = f"the newest checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved yet"
        overrides = " ".join(hc.overrides.task)
        log.error("interrupted: %s; continue with: python train.py %s resume=true", saved, overrides)
        sys.exit(130)  # a multirun stops too: SystemExit is not a failed job
    # The returned value lets sweepers optimise the headline metric.
    return summary.best["value"]


if __name__ == "__main__":
    OmegaConf.register_new_resolver("ssaf_stamp", _run_stamp, use_cache=True, replace=True)
    register_configs()
    try:
        main()
    except SystemExit as e:
        # Hydra reports a config it cannot compose (a wrong type, an unknown key or option) and exits 1, as
        # it does for a crash; ssaf's promise is exit 2 for every config error.
        if e.code == 1 and not _started:
            sys.exit(2)
        raise
