"""Run logs: a machine-readable metrics.json, the trackers of the ``logger`` group, progress bars. Rank 0 only.

metrics.json (rewritten atomically after every epoch; the table command reads it):
``status`` (running | finished | preempted | failed; a run is finished when it reached
``trainer.max_epochs`` or ``trainer.max_steps``, and ``ended_by`` says which), ``epochs`` (one dict
per epoch: train/test loss, top-1, top-5 in %, lr, images_per_s, train_time_s, plus the criterion's
logs such as the L-GM margin; ``partial: true`` marks an epoch cut short by ``max_steps`` or a
signal), ``best`` (the epoch with the highest validation top-1 where ``dataset.val_fraction`` holds out a
validation set, else the highest test top-1), ``final`` (the last evaluated epoch),
``wall_time_s``, ``images_per_s`` (training throughput over the run), ``num_parameters``,
``world_size``, ``started_at`` / ``ended_at`` (Unix times of this process's start and last write).
The trackers (lgm_gcp/loggers: TensorBoard, metrics.csv, MLflow, W&B) get every scalar, every epoch
and the summary with the final checkpoint; a tracker that fails mid-run is reported once and dropped.
Under DDP also ``replica_checksums`` and ``rank_steps`` (every rank's parameter sum and last step).

Progress bars are drawn only when stderr is a terminal; otherwise (CI, SLURM, ``| tee``) the
trainer's one log line per epoch is the whole progress report.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from tqdm.auto import tqdm

from lgm_gcp.loggers.base import Tracker, write_atomic
from lgm_gcp.loggers.trackers import call_each


def write_json(path: Path, payload: Any) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=False))


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """A tqdm bar when ``enabled`` and stderr is a terminal; the bare iterable otherwise."""
    if not (enabled and sys.stderr.isatty()):
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr, mininterval=0.5)


class RunLogger:
    """metrics.json, and the trackers of the ``logger`` group (lgm_gcp/loggers), on rank 0 (``enabled``)."""

    def __init__(self, run_dir: Path, enabled: bool, history: list | None = None, extra: Mapping | None = None,
                 trackers: list[Tracker] | None = None):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.history = list(history or [])
        self.extra = dict(extra or {})
        self.start = time.time() - self.extra.pop("wall_time_s", 0.0)
        self.extra["started_at"] = time.time()
        self.trackers = list(trackers or []) if enabled else []

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        if self.trackers:
            self.trackers = call_each(self.trackers, "scalars", {f"{prefix}/{k}": v for k, v in values.items()}, step)

    def epoch(self, record: Mapping[str, Any], step: int) -> None:
        self.history.append(dict(record))
        self.scalars("epoch", {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"}, step)
        self.write("running")

    def summary(self, status: str) -> dict:
        tested = [r for r in self.history if "test_top1" in r]
        trained_images = sum(r.get("train_images", 0) for r in self.history)
        train_time = sum(r.get("train_time_s", 0.0) for r in self.history)
        return {
            "status": status,
            **self.extra,
            "epochs": self.history,
            "best": max(tested, key=lambda r: r.get("val_top1", r["test_top1"])) if tested else None,
            "final": tested[-1] if tested else None,
            "wall_time_s": time.time() - self.start,
            "images_per_s": trained_images / train_time if train_time else None,
            "ended_at": time.time(),
        }

    def write(self, status: str) -> None:
        if self.enabled:
            write_json(self.run_dir / "metrics.json", self.summary(status))
            self.trackers = call_each(self.trackers, "epoch", self.history)

    def close(self, status: str) -> None:
        self.write(status)
        last = self.run_dir / "checkpoints" / "last.pt"
        self.trackers = call_each(self.trackers, "finish", self.summary(status), status,
                                  last if last.is_file() else None)
        self.trackers = []
