"""Multirun bookkeeping: each job's outcome in ``<sweep dir>/jobs.jsonl`` and a summary at the end.

Hydra's basic launcher runs every job of a batch even when one fails, then re-raises the first
failure, so its ``on_multirun_end`` never runs after a failure; ``lgm-gcp-train`` therefore also
prints ``summary()`` when a sweep exits non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_DIRS: list = []  # sweeps started by this process, for the summary after a failure


FINISHED_RUNS = ("finished", "evaluated")  # metrics.json statuses of a run that is done


def is_first_task() -> bool:
    """Rank 0 of a job run as several ranks (SLURM tasks): the one that speaks for the job."""
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def record_job(sweep_dir: str | Path, job: str, status: str, error: str | None = None) -> None:
    """Append one job's outcome to ``<sweep dir>/jobs.jsonl`` (COMPLETED, FAILED, PREEMPTED, or the state
    SLURM ended it in: CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...)."""
    if not is_first_task():
        return
    with open(Path(sweep_dir) / "jobs.jsonl", "a") as f:
        f.write(json.dumps({"job": job, "status": status, "error": error}) + "\n")


def summary(sweep_dir: str | Path) -> str:
    """One line for the sweep, then one per job that did not finish. A job's latest record counts (a
    requeued or rerun job records again), and only a finished run counts as completed."""
    path = Path(sweep_dir) / "jobs.jsonl"
    if not path.is_file():
        return f"sweep {sweep_dir}: no job finished"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    jobs = list({j["job"]: j for j in records}.values())
    unfinished = [j for j in jobs if j["status"] != "COMPLETED"]
    counts = Counter(j["status"] for j in unfinished)
    lines = [f"sweep {sweep_dir}: {len(jobs) - len(unfinished)} of {len(jobs)} jobs completed"
             + (", " + ", ".join(f"{n} {status.lower().replace('_', ' ')}" for status, n in sorted(counts.items()))
                + ":" if unfinished else "")]
    lines += [f"  {j['status']} {j['job']}: {j['error']}" for j in unfinished]
    return "\n".join(lines)


def run_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP_DIRS.append(str(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        status, error = job_return.status.name, None
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value
            error = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        elif (ended := run_status(run_dir)) not in FINISHED_RUNS:  # returned, but its run did not finish
            status, error = "FAILED", f"the run ended with status {ended!r} ({run_dir / 'metrics.json'})"
        record_job(config.hydra.sweep.dir, run_dir.name, status, error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(summary(config.hydra.sweep.dir), file=sys.stderr)
