"""Preemption: SIGTERM / SIGUSR1 (a cluster taking the node back) asks the run to checkpoint and stop.

The handler only sets a flag; the training loop checks it after every step, and under DDP the ranks
agree (all-reduce) so that all of them stop after the same step. The run then writes ``last`` and
exits with status ``preempted``; rerunning the same command resumes from it (SLURM requeue).
"""

from __future__ import annotations

import signal
import threading

import torch

from lgm_gcp.engine import distributed

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


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

    def requested(self, device: torch.device, distributed_run: bool) -> bool:
        if not distributed_run:
            return self.flag
        flag = torch.tensor([float(self.flag)], device=device)
        return bool(distributed.all_reduce_sum(flag).item() > 0)
