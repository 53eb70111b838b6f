"""``metrics.csv``: metrics.json's epoch records as a table, one row per epoch, the columns in order
of first appearance (``pandas.read_csv`` reads it), rewritten atomically after every epoch."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lgm_gcp.loggers.base import Tracker, write_atomic


def epochs_csv(history: list) -> str:
    columns = list(dict.fromkeys(k for record in history for k in record))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


class CSVTracker(Tracker):
    def __init__(self, file: str = "metrics.csv"):
        self.file, self.path = file, None

    def start(self, run_dir: Path, config, hparams, run_id):
        self.path = run_dir / self.file
        return None

    def epoch(self, history: list[dict]) -> None:
        if history:
            write_atomic(self.path, epochs_csv(history))
