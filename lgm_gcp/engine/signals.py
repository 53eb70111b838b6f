"""Preemption: a scheduler's stop signal asks the run to checkpoint and stop, then the job is requeued.

The signals are SIGTERM (``scontrol requeue``, preemption, ``scancel``, a plain ``kill``), SIGUSR2 (submitit's
time-limit warning, ``#SBATCH --signal=USR2@<s>``), SIGUSR1 (``scancel --signal=USR1``, many hand-written
sbatch scripts) and the one ``SUBMITIT_PREEMPT_SIGNAL`` names. The handler only sets a flag; the training loop
checks it after every step. Under DDP the ranks agree by an all-reduce every ``CHECK_EVERY`` steps (at the
same steps on every rank), so all of them stop after the same step. The run writes ``last.pt`` and
``metrics.json`` (``status: preempted``, ``preempted_by``), releases its folder and leaves the process group.

Only then does ``end_preempted`` hand the signal on to the handler installed before training, and end the
process with ``PREEMPTED_EXIT`` so that nothing reads a stopped run as a finished one:

- the signal's own earlier handler, if it is a Python callable: submitit's ``checkpoint_and_try_requeue`` on
  its signal (it requeues the job and exits without a result, so the launcher waits for the requeued run);
- SIGUSR1 or SIGUSR2 without one, inside a submitit job: submitit's requeue handler (of its own signal), so
  ``scancel --signal=USR1`` requeues too;
- SIGUSR1 or SIGUSR2 in a SLURM job without submitit (``srun lgm-gcp-train`` in a batch script with
  ``#SBATCH --signal=USR2@120``): rank 0 requeues the job itself (``scontrol requeue``), as Lightning's
  SLURM auto-requeue does;
- SIGTERM is never turned into a requeue: SLURM requeues the job itself after ``scontrol requeue`` or a
  preemption, and a ``scancel`` means cancel.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading

import torch

from lgm_gcp.engine import distributed

CHECK_EVERY = 10  # steps between the ranks' agreement under DDP
# sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is invited to retry": rerunning resumes the run
PREEMPTED_EXIT = 75

log = logging.getLogger(__name__)


def scheduler_signal() -> signal.Signals:
    """The signal submitit checkpoints and requeues on: ``SUBMITIT_PREEMPT_SIGNAL`` (USR2 by default)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper()
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2)


def preemption_signals() -> tuple[signal.Signals, ...]:
    """Every signal that stops a run with a checkpoint, in the order they are installed."""
    signals = [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2]
    extra = scheduler_signal()
    return tuple(signals + ([extra] if extra not in signals else []))


class Preempted(SystemExit):
    """The run stopped on a scheduler's signal after writing its checkpoint; rerunning resumes it. A
    ``SystemExit``, so that neither Hydra's job runner nor submitit records the job as a success. Rank 0
    exits ``PREEMPTED_EXIT`` and speaks for the job; the other ranks of a multi-task step exit 0, since
    on a cluster with ``KillOnBadExit`` their non-zero exit would kill rank 0 before it has requeued."""

    def __init__(self, signame: str):
        super().__init__(PREEMPTED_EXIT if os.environ.get("RANK", "0") == "0" else 0)
        self.signame = signame


def call_previous(previous, signum: int | None) -> None:
    """Run ``previous``, the handler a signal had before ours, for ``signum`` if it is a Python callable
    (not SIG_DFL, SIG_IGN or None: the default action would kill a process that has just stopped cleanly)."""
    if signum is not None and callable(previous):
        previous(signum, None)


def requeue_handler(signum: int):
    """The handler that should see ``signum`` once the run has stopped (see the module docstring)."""
    own = signal.getsignal(signum)
    if callable(own) or signum == signal.SIGTERM:  # submitit's requeue on its signal; on SIGTERM, its log line
        return own
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        return signal.getsignal(scheduler_signal())
    if "SLURM_JOB_ID" in os.environ:
        return requeue_slurm_job
    return own


def requeue_slurm_job(signum: int, frame=None) -> None:
    """``scontrol requeue`` this SLURM job (from rank 0 only; SLURM then stops every task). A job that
    cannot be requeued (not a batch job, ``--no-requeue``) is said so in one line and ends as preempted."""
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) != "0":
        return
    job = os.environ["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    try:
        out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.error("could not requeue SLURM job %s: %s; resubmit it to resume", job, e)
        return
    if out.returncode:
        log.error("could not requeue SLURM job %s: %s; resubmit it to resume", job, out.stderr.strip())
    else:
        log.warning("requeued SLURM job %s after %s; it resumes from the checkpoint", job,
                    signal.Signals(signum).name)


def end_preempted(signame: str | None) -> None:
    """After a preempted run has written everything and left its process group: hand the signal on,
    then end the job with ``Preempted`` (unless the handler ended it first, as submitit's does)."""
    signum = getattr(signal, signame, None) if signame else None
    if signum is not None and threading.current_thread() is threading.main_thread():
        call_previous(requeue_handler(signum), signum)
    raise Preempted(signame or "a preemption signal")


class Preemption:
    """While in use, the preemption signals set ``flag`` instead of their usual action."""

    def __init__(self):
        self.flag = False
        self.signum: int | None = None  # the first preemption signal received
        self._previous = {}

    @property
    def signame(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def _handler(self, signum, frame) -> None:
        self.flag = True
        if self.signum is None:
            self.signum = signum
            log.warning("%s received: stopping after this step with a checkpoint", signal.Signals(signum).name)

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():
            for sig in preemption_signals():
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
