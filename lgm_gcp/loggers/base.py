"""The interface every tracker implements (all methods optional: the base class does nothing)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` by a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"trainer.batch_size": 128, ...}: nested mappings joined by dots, lists kept as values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    name = "tracker"

    def start(self, run_dir: Path, config: Mapping[str, Any], hparams: Mapping[str, Any],
              run_id: str | None) -> str | None:
        """Begin (or, given the ``run_id`` an earlier start of this run folder returned, continue) the
        tracker's run; return the id to continue it by, or None."""
        return None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Scalars named ``<prefix>/<name>`` (train/loss, epoch/test_top1, ...) at a global step."""

    def epoch(self, history: list[dict]) -> None:
        """Every epoch record so far, after one more epoch ended."""

    def finish(self, summary: Mapping[str, Any], status: str, checkpoint: Path | None) -> None:
        """The run ended with ``status``; ``summary`` is metrics.json's content, ``checkpoint`` the
        final ``last.pt`` (None when none was written)."""
