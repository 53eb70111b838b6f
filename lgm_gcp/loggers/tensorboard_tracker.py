"""TensorBoard: scalars under ``<run dir>/tb``, and the hparams view (the run's choices against its
final and best metrics) when the run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from lgm_gcp.loggers.base import Tracker


class TensorBoardTracker(Tracker):
    def __init__(self, folder: str = "tb"):
        self.folder, self.writer, self.hparams = folder, None, {}

    def start(self, run_dir: Path, config, hparams, run_id):
        from torch.utils.tensorboard import SummaryWriter

        self.writer, self.hparams = SummaryWriter(log_dir=str(run_dir / self.folder)), dict(hparams)
        return None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def finish(self, summary: Mapping[str, Any], status: str, checkpoint: Path | None) -> None:
        if summary["final"]:
            final = {f"final/{k}": v for k, v in summary["final"].items() if k.startswith(("test_", "val_"))
                     and isinstance(v, float)}
            chosen_by = "val_top1" if "val_top1" in summary["best"] else "test_top1"
            final[f"best/{chosen_by}"] = summary["best"][chosen_by]
            self.writer.add_hparams(self.hparams, final, run_name="hparams")
        self.writer.close()
