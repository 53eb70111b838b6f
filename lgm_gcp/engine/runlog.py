"""Run logs: TensorBoard scalars, a machine-readable metrics.json, progress bars. Rank 0 only.

metrics.json (rewritten atomically after every epoch; the table command reads it):
``status`` (running | finished | preempted | failed; a run is finished when it reached
``trainer.max_epochs`` or ``trainer.max_steps``, and ``ended_by`` says which), ``epochs`` (one dict
per epoch: train/test loss, top-1, top-5 in %, lr, images_per_s, train_time_s, plus the criterion's
logs such as the L-GM margin; ``partial: true`` marks an epoch cut short by ``max_steps`` or a
signal), ``best`` (the epoch with the highest validation top-1 where ``dataset.val_fraction`` holds out a
validation set, else the highest test top-1), ``final`` (the last evaluated epoch),
``wall_time_s``, ``images_per_s`` (training throughput over the run), ``num_parameters``,
``world_size``, ``started_at`` / ``ended_at`` (Unix times of this process's start and last write).
``metrics.csv`` beside it holds the epoch records as a table, one row per epoch; TensorBoard's
hparams view gets the run's choices with its final and best metrics when it ends.
Under DDP also ``replica_checksums`` and ``rank_steps`` (every rank's parameter sum and last step).

Progress bars are drawn only when stderr is a terminal; otherwise (CI, SLURM, ``| tee``) the
trainer's one log line per epoch is the whole progress report.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from tqdm.auto import tqdm


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, payload: Any) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=False))


def epochs_csv(history: list) -> str:
    """One row per epoch record, the columns in order of first appearance (pandas.read_csv reads it)."""
    columns = list(dict.fromkeys(k for record in history for k in record))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """A tqdm bar when ``enabled`` and stderr is a terminal; the bare iterable otherwise."""
    if not (enabled and sys.stderr.isatty()):
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr, mininterval=0.5)


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool, history: list | None = None, extra: Mapping | None = None):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.history = list(history or [])
        self.extra = dict(extra or {})
        self.start = time.time() - self.extra.pop("wall_time_s", 0.0)
        self.extra["started_at"] = time.time()
        self.writer = None
        self.hparams: dict = {}  # the run's choices for TensorBoard's hparams view, set by the trainer
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

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
            if self.history:
                write_atomic(self.run_dir / "metrics.csv", epochs_csv(self.history))

    def close(self, status: str) -> None:
        self.write(status)
        summary = self.summary(status)
        if self.writer is not None and summary["final"]:  # TensorBoard's hparams view: choices -> final metrics
            final = {f"final/{k}": v for k, v in summary["final"].items() if k.startswith(("test_", "val_"))
                     and isinstance(v, float)}
            chosen_by = "val_top1" if "val_top1" in summary["best"] else "test_top1"
            final[f"best/{chosen_by}"] = summary["best"][chosen_by]
            self.writer.add_hparams(self.hparams, final, run_name="hparams")
        if self.writer is not None:
            self.writer.close()
            self.writer = None
