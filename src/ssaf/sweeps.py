"""Hydra multirun bookkeeping: every job's outcome, and a list of the failed ones when the sweep ends.

Hydra's basic sweeper runs every job of a batch even when one fails, then raises the first failure;
this callback records each job as it ends and, when the process exits, prints which jobs failed (with
their overrides, error and run directory) and writes ``multirun_summary.json`` into the sweep folder.
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class MultirunSummary(Callback):
    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        atexit.register(self.report)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None
        self.jobs.append(
            {
                "overrides": list(job_return.overrides or []),
                "status": "failed" if failed else "completed",
                "error": f"{type(error).__name__}: {error}" if error is not None else None,
                "run_dir": str(job_return.working_dir or ""),
                "output_dir": str(getattr(job_return.hydra_cfg.hydra.runtime, "output_dir", ""))
                if job_return.hydra_cfg is not None
                else "",
            }
        )

    def report(self) -> None:
        if not self.jobs:
            return
        failed = [j for j in self.jobs if j["status"] == "failed"]
        lines = [f"\nmultirun: {len(self.jobs)} jobs, {len(self.jobs) - len(failed)} completed, {len(failed)} failed"]
        for j in failed:
            lines.append(f"  FAILED {' '.join(j['overrides'])}\n         {j['error']}\n         {j['output_dir']}")
        print("\n".join(lines), flush=True)
        if self.sweep_dir is not None and self.sweep_dir.exists():
            (self.sweep_dir / "multirun_summary.json").write_text(json.dumps(self.jobs, indent=2))
