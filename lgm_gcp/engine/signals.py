"""Preemption: SIGTERM / SIGUSR1 (a cluster taking the node back) asks the run to checkpoint and stop.

The handler only sets a flag; the training loop checks it after every step. Under DDP the ranks agree
by an all-reduce every ``CHECK_EVERY`` steps (at the same steps on every rank), so all of them stop
after the same step without a collective on every step. The run then writes ``last`` and
exits with status ``preempted``; rerunning the same command resumes from it (SLURM requeue).
"""

from __future__ import annotations

import signal
import threading

import torch

from lgm_gcp.engine import distributed

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
CHECK_EVERY = 10  # steps between the ranks' agreement under DDP


class Preemption:
    def __init__(self):
        self.flag = False
        self._previous = {}

    def _handler(self, signum, frame) -> None:
        self.flag = True

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def requested(self, device: torch.device, distributed_run: bool, step: int | None = None) -> bool:
        """Whether to stop now. Under DDP a collective: every rank must call it at the same ``step``
        (``None``: always ask, e.g. at an epoch end)."""
        if not distributed_run:
            return self.flag
        if step is not None and step % CHECK_EVERY:
            return False
        flag = torch.tensor([float(self.flag)], device=device)
        return bool(distributed.all_reduce_sum(flag).item() > 0)
