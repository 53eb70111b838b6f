"""Weights & Biases (``pip install "lgm-gcp[wandb]"``): one W&B run per run folder, resumed with it.

Config: the resolved config; history: every scalar at its global step (W&B drops a step below one it
has seen, so after a resume from a checkpoint older than the last logged step, the repeated steps are
not logged twice); summary: the final and best metrics and ``checkpoint`` (the final ``last.pt``).
``mode`` is online, offline (files under ``<run dir>/wandb``, ``wandb sync`` uploads them later),
disabled, or ``auto`` (the default, unless ``WANDB_MODE`` says otherwise): online where W&B finds a login
(``WANDB_API_KEY``, or ``wandb login``'s entry in ~/.netrc for ``WANDB_BASE_URL``'s host), else offline
with one line saying so, where W&B itself would stop the run with ``No API key configured``.
"""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence
from urllib.parse import urlparse

from lgm_gcp.errors import TrackerError
from lgm_gcp.loggers.base import Tracker

log = logging.getLogger("lgm_gcp")


def has_login() -> bool:
    """Whether W&B will find an API key: ``WANDB_API_KEY``, or ``wandb login``'s ~/.netrc (or ``NETRC``)
    entry for the host of ``WANDB_BASE_URL`` (api.wandb.ai by default)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return bool(os.path.isfile(path) and netrc.netrc(path).authenticators(host))
    except (netrc.NetrcParseError, OSError):
        return False


class WandbTracker(Tracker):
    def __init__(self, project: str = "lgm-gcp", entity: str | None = None,
                 mode: Literal["auto", "online", "offline", "disabled"] = "auto",
                 tags: Sequence[str] = ()):
        self.project, self.entity, self.mode, self.tags = project, entity, mode, list(tags)
        self.run = None

    def start(self, run_dir: Path, config, hparams, run_id):
        try:
            import wandb
        except ImportError:
            raise TrackerError('logger=wandb needs W&B: pip install "lgm-gcp[wandb]"') from None
        mode = self.mode
        if mode == "auto":
            mode = "online" if has_login() else "offline"
            if mode == "offline":
                log.warning("logger.wandb: no W&B login found (wandb login, or WANDB_API_KEY): logging offline under "
                         "%s; `wandb sync %s/wandb/offline-run-*` uploads it later", run_dir / "wandb", run_dir)
        self.run = wandb.init(project=self.project, entity=self.entity, mode=mode, dir=str(run_dir),
                              name=run_dir.name, id=run_id or uuid.uuid4().hex[:8], resume="allow",
                              config={**dict(config), "choices": dict(hparams)}, tags=self.tags,
                              settings=wandb.Settings(silent=True, console="off"), reinit="create_new")
        return self.run.id

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def finish(self, summary: Mapping[str, Any], status: str, checkpoint: Path | None) -> None:
        for which in ("final", "best"):
            for k, v in (summary.get(which) or {}).items():
                if isinstance(v, (int, float)):
                    self.run.summary[f"{which}/{k}"] = v
        self.run.summary["status"] = status
        if checkpoint is not None:
            self.run.summary["checkpoint"] = str(checkpoint)
        self.run.finish(exit_code=0 if status in ("finished", "preempted") else 1)
