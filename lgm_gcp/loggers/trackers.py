"""Every tracker of the ``logger`` group started, and each called in turn: one that fails is dropped."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

from lgm_gcp.errors import TrackerError
from lgm_gcp.loggers.base import Tracker
from lgm_gcp.options.instantiate import instantiate

log = logging.getLogger("lgm_gcp")
IDS_FILE = "trackers.json"  # the tracker run ids of this run folder, so a resumed run continues them


def start_trackers(logger_cfg: Mapping[str, Mapping[str, Any]], run_dir: Path, config: Mapping[str, Any],
                   hparams: Mapping[str, Any]) -> list[Tracker]:
    """Instantiate and start every tracker of ``logger_cfg`` (name -> its config); a tracker that is
    not installed or cannot start raises a one-line ``TrackerError`` naming it."""
    ids_path = Path(run_dir) / IDS_FILE
    ids = json.loads(ids_path.read_text()) if ids_path.is_file() else {}
    trackers = []
    for name, cfg in logger_cfg.items():
        tracker = instantiate(cfg)
        try:
            ids[name] = tracker.start(Path(run_dir), config, hparams, ids.get(name))
        except TrackerError:
            raise
        except Exception as e:  # the tracker's own error: a bad URI, an unreachable server, no login
            reason = " ".join(str(e).split())[:300]
            raise TrackerError(f"logger.{name} could not start: {type(e).__name__}: {reason}") from None
        tracker.name = name
        trackers.append(tracker)
    if any(v is not None for v in ids.values()):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        ids_path.write_text(json.dumps({k: v for k, v in ids.items() if v is not None}, indent=2))
    return trackers


def call_each(trackers: list[Tracker], method: str, *args) -> list[Tracker]:
    """Call ``method`` on every tracker; one that fails is reported once and dropped, so a tracker
    outage never ends a training run. Returns the trackers still working."""
    working = []
    for tracker in trackers:
        try:
            getattr(tracker, method)(*args)
            working.append(tracker)
        except Exception as e:  # noqa: BLE001 - any tracker failure: the run goes on without it
            log.warning("logger.%s failed in %s (%s: %s); it is off for the rest of this run", tracker.name, method,
                        type(e).__name__, " ".join(str(e).split())[:200])
    return working
