"""Multirun bookkeeping: each job's outcome in ``<sweep dir>/jobs.jsonl`` and a summary at the end.

Hydra's basic launcher runs every job of a batch even when one fails, then re-raises the first
failure, so its ``on_multirun_end`` never runs after a failure; ``lgm-gcp-train`` therefore also
prints ``summary()`` when a sweep exits non-zero.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_DIRS: list = []  # sweeps started by this process, for the summary after a failure


def summary(sweep_dir: str | Path) -> str:
    path = Path(sweep_dir) / "jobs.jsonl"
    if not path.is_file():
        return f"sweep {sweep_dir}: no job finished"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    jobs = list({j["job"]: j for j in records}.values())  # a rerun of the sweep: each job's latest record
    failed = [j for j in jobs if j["status"] != "COMPLETED"]
    lines = [f"sweep {sweep_dir}: {len(jobs) - len(failed)} of {len(jobs)} jobs completed"
             + (f", {len(failed)} failed:" if failed else "")]
    lines += [f"  FAILED {j['job']}: {j['error']}" for j in failed]
    return "\n".join(lines)


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP_DIRS.append(str(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        error = job_return._return_value if job_return.status == JobStatus.FAILED else None
        record = {"job": Path(config.hydra.runtime.output_dir).name, "status": job_return.status.name,
                  "error": None if error is None else f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
        with open(Path(config.hydra.sweep.dir) / "jobs.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(summary(config.hydra.sweep.dir), file=sys.stderr)
