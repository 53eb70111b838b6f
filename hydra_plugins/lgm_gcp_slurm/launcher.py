"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, with what a real cluster needs.

(Hydra finds launchers in the ``hydra_plugins`` namespace only, hence this package beside ``lgm_gcp``.)

The plugin submits one array job and returns the first job's error as soon as it sees one, reads a job
that wrote a result before SLURM requeued it as done, and waits in silence on a job that can never start.
This launcher submits the same way (``submitit``: one array job, ``<sweep dir>/.submitit/<job id>/`` for
the logs; the job runs the plugin's ``__call__`` and is requeued through its ``checkpoint``), then:

- refuses ``tasks_per_node > 1`` with ``trainer.devices > 1`` before submitting (each task is one rank);
- reports sbatch's refusal as one line with sbatch's own reason;
- waits for every job, and says once why a job pends where the reason is not the usual wait for
  resources; a reason that never clears (``NEVER_STARTS``: the request exceeds the partition's limits)
  cancels that job;
- turns a job that ended without a result (CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...) into a
  FAILED job naming SLURM's state and its log, recorded in ``jobs.jsonl`` for the sweep summary, so the
  launching command exits non-zero unless every run finished.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict

from lgm_gcp.engine.slurm import check_one_device_per_task
from lgm_gcp.engine.sweep import record_job
from lgm_gcp.errors import ClusterError, ConfigError, UserError, fail

log = logging.getLogger(__name__)

# squeue reasons of a job that will not start unless the request or the partition changes
NEVER_STARTS = ("PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount",
                "InvalidQOS", "QOSMaxWallDurationPerJobLimit", "QOSMaxCpuPerJobLimit", "QOSMaxGRESPerJob",
                "QOSMaxMemoryPerJob", "QOSMaxNodePerJobLimit", "AssocMaxWallDurationPerJobLimit",
                "AssocMaxCpuPerJobLimit", "AssocMaxNodesPerJobLimit")
# the reasons of an ordinary wait in the queue: not reported
WAITING = ("None", "Priority", "Resources", "BeginTime", "Dependency", "JobArrayTaskLimit", "Prolog", "Cleaning",
           "Reservation")
POLL_S = 2.0
REASON_EVERY_S = 20.0  # squeue is asked for pending reasons at most this often


def say(message: str) -> None:
    """A line for the user on stderr (Hydra's own log goes to stdout)."""
    print(f"lgm-gcp-train: {message}", file=sys.stderr, flush=True)


class JobNotFinished(CompactHydraException):
    """A SLURM job that ended without a result: cancelled, timed out for good, killed with its node. Hydra
    prints a compact exception as its message alone (no traceback: nothing in this process failed)."""


def pending_reasons(job_ids: Sequence[str]) -> dict[str, str]:
    """``{job id: reason}`` of the pending ones among ``job_ids`` (array tasks one by one)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["squeue", "-h", "-r", "-t", "PENDING", "-o", "%i|%r", "-j", ",".join(arrays)],
                         capture_output=True, text=True, timeout=60)
    reasons = dict(line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)
    return {j: reasons[j] for j in job_ids if j in reasons}


def last_trace_line(error: str) -> str:
    """The exception line of the traceback submitit puts between two rules of dashes in its error."""
    lines = error.splitlines()
    rules = [i for i, line in enumerate(lines) if line.strip() and set(line.strip()) == {"-"}]
    trace = [line for line in lines[rules[0] + 1:rules[1]] if line.strip()] if len(rules) > 1 else []
    return (trace[-1] if trace else lines[0])[:300]


def partition_limits(partition: str | None) -> str:
    """The partition's limits as scontrol shows them (MaxTime, MaxNodes, MaxMemPerNode, ...), for the report."""
    out = subprocess.run(["scontrol", "show", "partition", "-o", *([partition] if partition else [])],
                         capture_output=True, text=True, timeout=60)
    fields = dict(f.split("=", 1) for line in out.stdout.splitlines()[:1] for f in line.split() if "=" in f)
    keep = ("PartitionName", "MaxTime", "MaxNodes", "MaxCPUsPerNode", "MaxMemPerNode", "TotalCPUs", "TotalNodes")
    return " ".join(f"{k}={fields[k]}" for k in keep if k in fields)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            jobs, job_dirs = self._submit(job_overrides, initial_job_idx)
        except UserError as e:  # before any job ran: one line, as the entrypoint reports a bad command
            fail("lgm-gcp-train", e, status=2 if isinstance(e, ConfigError) else 1)
        self._wait(jobs, job_dirs)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        return [self._outcome(job, list(o), sweep_dir, name) for job, o, name in zip(jobs, job_overrides, job_dirs)]

    def _submit(self, job_overrides, initial_job_idx):
        import submitit

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_dirs = [self._check_job(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
        executor = self._executor(submitit)
        params = [(list(o), "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}",
                   Singleton.get_state()) for i, o in enumerate(job_overrides)]
        sbatch_stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(sbatch_stderr):  # submitit prints sbatch's stderr before raising
                jobs = executor.map_array(self, *zip(*params))
        except submitit.core.utils.FailedJobError as e:
            reason = " ".join(str(e).replace("sbatch: error:", "").split()) or sbatch_stderr.getvalue().strip()
            raise ClusterError(f"sbatch refused the job: {reason} (hydra.launcher: {self._request()}; on a CPU "
                               "partition, trainer.accelerator=cpu requests no GPU)") from None
        log.info("submitted %d job%s as SLURM job %s; logs in %s", len(jobs), "s" if len(jobs) > 1 else "",
                 jobs[0].job_id.split("_")[0], Path(str(jobs[0].paths.stdout).replace(jobs[0].job_id, "<job id>")))
        return jobs, job_dirs

    def _executor(self, submitit):
        """submitit's executor for ``self.params`` (the launcher config): the folder and submitit's own
        options go to the constructor, the rest to ``update_parameters`` (``slurm_`` before SLURM's)."""
        own = {"max_num_timeout", "python"}
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         **{f"slurm_{k}": v for k, v in self.params.items() if k in own})
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in self.params.items()
                                      if k not in own | {"submitit_folder"}})
        return executor

    def _request(self) -> str:
        keys = ("partition", "gpus_per_node", "tasks_per_node", "nodes", "cpus_per_task", "mem_gb", "timeout_min")
        return ", ".join(f"{k}={self.params.get(k)}" for k in keys)

    def _check_job(self, overrides: list[str], num: int) -> str:
        """The job's own config, as its node will compose it: refuse ranks within ranks; return its folder name."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
        tasks = self.params.get("tasks_per_node") or 1
        if tasks > 1:
            check_one_device_per_task(cfg.trainer.devices, f"hydra.launcher.tasks_per_node={tasks}")
        return str(cfg.hydra.sweep.subdir)

    def _wait(self, jobs, job_dirs) -> None:
        """Until every job is done; pending reasons are reported once each, impossible requests cancelled."""
        reported: dict[str, str] = {}
        name_of = {job.job_id: name for job, name in zip(jobs, job_dirs)}
        last_asked = 0.0
        while waiting := [job.job_id for job in jobs if not job.done()]:
            time.sleep(POLL_S)
            if time.time() - last_asked < REASON_EVERY_S:
                continue
            last_asked = time.time()
            for job_id, reason in pending_reasons(waiting).items():
                if reason in WAITING or reason.startswith(("QOSGrp", "AssocGrp")) or reported.get(job_id) == reason:
                    continue
                reported[job_id] = reason
                name = name_of[job_id]
                if reason in NEVER_STARTS:
                    say(f"SLURM job {job_id} ({name}) can never start: Reason={reason}, the request "
                        f"({self._request()}) exceeds the partition ({partition_limits(self.params.get('partition'))})"
                        "; cancelling it")
                    subprocess.run(["scancel", job_id], check=False, timeout=60)
                else:
                    say(f"SLURM job {job_id} ({name}) is pending: Reason={reason}")

    def _outcome(self, job, overrides: list[str], sweep_dir: Path, name: str) -> JobReturn:
        """The job's JobReturn (rank 0's where it ran as several tasks), or a FAILED one saying why not."""
        from submitit.core.utils import FailedJobError

        error = job.exception()
        if error is None:
            return job.results()[0]
        if isinstance(error, FailedJobError):  # raised in the job, outside Hydra's job runner
            cause = last_trace_line(str(error))
            status, message = "FAILED", f"SLURM job {job.job_id}: {cause}; its log: {job.paths.stderr}"
        else:  # UncompletedJobError: SLURM ended it without a result
            status, message = job.state.split()[0], (f"SLURM job {job.job_id} ended {job.state} without a result; "
                                                     f"its log: {job.paths.stderr}")
        record_job(sweep_dir, name, status, message)
        result = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        result._return_value = JobNotFinished(f"{name}: {message}")
        return result
