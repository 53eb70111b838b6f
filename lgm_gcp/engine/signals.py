"""Preemption: SIGTERM / SIGUSR1 (a cluster taking the node back) asks the run to checkpoint and stop.

The handler only sets a flag; the training loop checks it after every step. Under DDP the ranks agree
by an all-reduce every ``CHECK_EVERY`` steps (at the same steps on every rank), so all of them stop
after the same step without a collective on every step. The run then writes ``last`` and
exits with status ``preempted``; rerunning the same command resumes from it.

Whatever handled the signal before (submitit installs ``checkpoint_and_try_requeue`` for SIGUSR1 in a
SLURM job) is not lost: once the checkpoint and metrics.json are written and the run folder is released,
``hand_on`` calls it with the signal that stopped the run, so the job is requeued and the requeued job
resumes from ``last.pt``.
"""

from __future__ import annotations

import signal
import threading

import torch

from lgm_gcp.engine import distributed

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
CHECK_EVERY = 10  # steps between the ranks' agreement under DDP


def call_previous(previous, signum: int | None) -> None:
    """Run ``previous``, the handler a signal had before ours, for ``signum`` if it is a Python callable
    (not SIG_DFL, SIG_IGN or None: the default action would kill a process that has just stopped cleanly)."""
    if signum is not None and callable(previous):
        previous(signum, None)


class Preemption:
    def __init__(self):
        self.flag = False
        self.signum: int | None = None  # the first preemption signal received
        self._previous = {}

    def _handler(self, signum, frame) -> None:
        self.flag = True
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def hand_on(self) -> None:
        """After the run has stopped: give the signal to the handler installed before ours."""
        call_previous(self._previous.get(self.signum), self.signum)

    def requested(self, device: torch.device, distributed_run: bool, step: int | None = None) -> bool:
        """Whether to stop now. Under DDP a collective: every rank must call it at the same ``step``
        (``None``: always ask, e.g. at an epoch end)."""
        if not distributed_run:
            return self.flag
        if step is not None and step % CHECK_EVERY:
            return False
        flag = torch.tensor([float(self.flag)], device=device)
        return bool(distributed.all_reduce_sum(flag).item() > 0)
