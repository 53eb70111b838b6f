"""Preemption (engine/signals.py): every scheduler signal checkpoints, then the job is requeued by whoever
requeues it, and the process never ends as a success. Fast tier: submitit's own handlers, installed as
its job runner installs them, with only ``scontrol requeue`` replaced by a record. tests/test_slurm.py
does the same against a real SLURM cluster."""

import json
import os
import signal

import pytest
import torch

from lgm_gcp.engine.launch import forward_signals, launch
from lgm_gcp.engine.runlock import RunLock
from lgm_gcp.engine.signals import PREEMPTED_EXIT, Preempted, preemption_signals, scheduler_signal

from conftest import TINY, resolved

submitit = pytest.importorskip("submitit", reason="needs the [sweep] extra (README's install includes it)")

HANDLED = (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR1, signal.SIGUSR2)


class Requeueable:
    """What hydra-submitit-launcher's launcher is to submitit: a callable job with ``checkpoint``."""

    def __call__(self):
        return None

    def checkpoint(self, *args, **kwargs):
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@pytest.fixture
def restore_signals():
    saved = {sig: signal.getsignal(sig) for sig in HANDLED}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def submitit_job(monkeypatch, tmp_path, restore_signals):
    """Inside a submitit SLURM job: its handlers on SIGTERM/SIGCONT (bypass) and on its preemption signal
    (checkpoint_and_try_requeue). Each ``scontrol requeue`` it would run is recorded with what the run
    folder held at that moment."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "42", "SLURM_PROCID": "0",
                       "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(key, value)
    requeues = []

    def requeue(env, countdown):
        run_dir = tmp_path / "run"
        with RunLock(run_dir):  # raises if the run still held its folder
            requeues.append({"status": json.loads((run_dir / "metrics.json").read_text())["status"],
                             "step": torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]})

    monkeypatch.setattr(SlurmJobEnvironment, "_requeue", requeue)

    def install(preempt_signal="USR2"):
        monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", preempt_signal)
        monkeypatch.setattr(SlurmJobEnvironment, "USR_SIG", preempt_signal)  # read once, at submitit's import
        delayed = submitit.helpers.DelayedSubmission(Requeueable())
        delayed.set_timeout(60, 3)
        (tmp_path / "submitit").mkdir()
        submitit.JobEnvironment()._handle_signals(submitit.core.utils.JobPaths(tmp_path / "submitit", "42"),
                                                  delayed)

    return install, requeues


def preempted_run(tmp_path, monkeypatch, signum):
    """launch() a 3-epoch run that receives ``signum`` after its first evaluation; returns the exception
    it ended with and its metrics.json."""
    from lgm_gcp.engine import train

    real_evaluate = train.evaluate

    def evaluate_then_signal(*args, **kwargs):
        out = real_evaluate(*args, **kwargs)
        os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(train, "evaluate", evaluate_then_signal)
    with pytest.raises(SystemExit) as ended:
        launch(resolved(*TINY, "trainer.max_epochs=3"), tmp_path / "run")
    return ended.value, json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_the_scheduler_signals_are_term_usr1_usr2_and_submitits_own(monkeypatch):
    assert preemption_signals() == (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "URG")
    assert scheduler_signal() == signal.SIGURG
    assert preemption_signals() == (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGURG)


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGUSR1])
def test_submitits_signal_and_usr1_checkpoint_then_requeue_once(tmp_path, monkeypatch, submitit_job, signum):
    """SIGUSR2 is submitit's time-limit warning: its handler requeues, after the checkpoint, metrics.json and
    the folder's lock are done with, and exits without a result (SystemExit -1: submitit's own exit).
    ``scancel --signal=USR1`` reaches the same handler, so it requeues too."""
    install, requeues = submitit_job
    install()
    ended, metrics = preempted_run(tmp_path, monkeypatch, signum)
    assert len(requeues) == 1 and requeues[0]["status"] == "preempted" and requeues[0]["step"] > 0
    assert ended.code == -1 and not isinstance(ended, Preempted)
    assert metrics["status"] == "preempted" and metrics["preempted_by"] == signal.Signals(signum).name


def test_sigterm_checkpoints_and_leaves_the_requeue_to_slurm(tmp_path, monkeypatch, submitit_job):
    """SIGTERM comes from scontrol requeue, a preemption (SLURM requeues the job itself) or scancel
    (cancel): submitit only logs it, we checkpoint and end with PREEMPTED_EXIT, never with success."""
    install, requeues = submitit_job
    install()
    ended, metrics = preempted_run(tmp_path, monkeypatch, signal.SIGTERM)
    assert requeues == []
    assert isinstance(ended, Preempted) and ended.code == PREEMPTED_EXIT == 75
    assert metrics["status"] == "preempted" and metrics["preempted_by"] == "SIGTERM"


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_submitit_preempt_signal_moves_the_requeue_to_the_signal_it_names(tmp_path, monkeypatch, submitit_job,
                                                                          signum):
    install, requeues = submitit_job
    install("USR1")
    ended, metrics = preempted_run(tmp_path, monkeypatch, signum)
    assert len(requeues) == 1 and ended.code == -1 and metrics["preempted_by"] == signal.Signals(signum).name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_outside_a_scheduler_every_signal_checkpoints_and_exits_75(tmp_path, monkeypatch, restore_signals, signum):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    ended, metrics = preempted_run(tmp_path, monkeypatch, signum)
    assert isinstance(ended, Preempted) and ended.code == PREEMPTED_EXIT
    assert metrics["status"] == "preempted" and metrics["preempted_by"] == signal.Signals(signum).name
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_the_ddp_launcher_forwards_every_preemption_signal_and_restores_the_handlers(restore_signals):
    """While the spawned workers run, the parent passes the signal on (to none here) instead of acting on it;
    afterwards the handlers installed before are back, for end_preempted to call."""
    calls = []

    def earlier(signum, frame):
        calls.append(signum)

    for sig in preemption_signals():
        signal.signal(sig, earlier)
    with forward_signals([]):
        for sig in preemption_signals():
            os.kill(os.getpid(), sig)
    assert calls == []
    assert all(signal.getsignal(sig) is earlier for sig in preemption_signals())


@pytest.fixture
def scontrol(tmp_path, monkeypatch):
    """A batch job of a cluster without submitit; ``scontrol`` on PATH writes down its arguments."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol-calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    return lambda: calls.read_text().splitlines() if calls.is_file() else []


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_a_plain_slurm_job_requeues_itself_on_usr1_and_usr2(tmp_path, monkeypatch, restore_signals, scontrol,
                                                             signum):
    """srun lgm-gcp-train in a batch script with --signal=USR2@<s>: after the checkpoint, rank 0 runs
    scontrol requeue on its own job (array tasks by their array id), then exits 75."""
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    ended, metrics = preempted_run(tmp_path, monkeypatch, signum)
    assert scontrol() == ["requeue 40_3"] and ended.code == PREEMPTED_EXIT and metrics["status"] == "preempted"


def test_a_plain_slurm_job_leaves_sigterm_and_other_ranks_alone(tmp_path, monkeypatch, restore_signals, scontrol):
    ended, _ = preempted_run(tmp_path, monkeypatch, signal.SIGTERM)
    assert scontrol() == [] and ended.code == PREEMPTED_EXIT
    from lgm_gcp.engine.signals import requeue_slurm_job

    monkeypatch.setenv("SLURM_PROCID", "1")  # rank 1 of an srun step: rank 0 requeues the job
    requeue_slurm_job(signal.SIGUSR2)
    assert scontrol() == []
    monkeypatch.setenv("SLURM_PROCID", "0")
    requeue_slurm_job(signal.SIGUSR2)
    assert scontrol() == ["requeue 43"]


def test_only_rank_0_exits_75(monkeypatch):
    """The job's status is rank 0's; another rank's non-zero exit could have SLURM (KillOnBadExit) kill
    rank 0 while it requeues the job."""
    monkeypatch.setenv("RANK", "1")
    assert Preempted("SIGUSR2").code == 0
    monkeypatch.setenv("RANK", "0")
    assert Preempted("SIGUSR2").code == PREEMPTED_EXIT
