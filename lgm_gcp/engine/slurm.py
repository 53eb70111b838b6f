"""One DDP rank per SLURM task: ``srun -n N`` (one or many nodes) and the submitit launcher's
``tasks_per_node=G nodes=N`` start N·G copies of the trainer; each reads its place from SLURM.

A task of a job step with more than one task (``SLURM_STEP_NUM_TASKS > 1``) exports what
``torch.distributed``'s ``env://`` rendezvous reads: ``RANK`` = ``SLURM_PROCID``, ``WORLD_SIZE`` =
``SLURM_STEP_NUM_TASKS``, ``LOCAL_RANK`` = ``SLURM_LOCALID``, ``LOCAL_WORLD_SIZE`` = this node's count in
``SLURM_STEP_TASKS_PER_NODE``, ``MASTER_ADDR`` = the step's first host (``scontrol show hostnames``) and
``MASTER_PORT`` (kept if set, else drawn from the job id, as submitit's ``TorchDistributedEnvironment``
does, so every task of the job picks the same one). The batch script's own shell (no step) and
torchrun inside SLURM (``RANK`` already set) are left alone.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from typing import Mapping, MutableMapping

from lgm_gcp.errors import ConfigError

PORTS = (20000, 60000)


def tasks_on_each_node(spec: str) -> list[int]:
    """SLURM's compressed per-node task counts, e.g. ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    counts = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ValueError(f"cannot read the task counts {spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[07-09],cpu01`` -> ``gpu07``), expanded by SLURM itself."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=60)
    hosts = out.stdout.split()
    if out.returncode or not hosts:
        raise ConfigError(f"scontrol show hostnames {nodelist} failed ({out.stderr.strip() or 'no host'}); "
                          "set MASTER_ADDR to the first node's address")
    return hosts[0]


def task_ranks(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The torch.distributed variables of this SLURM task, or None when this process is not one task of
    a multi-task step (or a launcher such as torchrun already set them)."""
    if "RANK" in environ or int(environ.get("SLURM_STEP_NUM_TASKS", "1")) < 2:
        return None
    per_node = tasks_on_each_node(environ["SLURM_STEP_TASKS_PER_NODE"])
    job_id = environ.get("SLURM_JOB_ID", "0")
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": environ["SLURM_STEP_NUM_TASKS"],
        "LOCAL_RANK": environ["SLURM_LOCALID"],
        "LOCAL_WORLD_SIZE": str(per_node[int(environ.get("SLURM_NODEID", "0"))]),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(environ["SLURM_STEP_NODELIST"]),
        "MASTER_PORT": environ.get("MASTER_PORT") or str(random.Random(job_id).randint(*PORTS)),
    }


def export_task_ranks(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Export this task's rank variables; True when this process is one rank of a multi-task step."""
    ranks = task_ranks(environ)
    if ranks is not None:
        environ.update(ranks)
    return ranks is not None


def check_one_device_per_task(devices, tasks: str) -> None:
    """One rank per task means one device per task: spawning workers inside each would nest two groups.
    ``tasks`` says where the tasks come from (``hydra.launcher.tasks_per_node=2``, ``4 SLURM tasks``)."""
    if devices not in (1, "1", "auto"):
        raise ConfigError(f"{tasks} with trainer.devices={devices}: each SLURM task is one rank and drives one "
                          "device; use trainer.devices=1 with one task per GPU, or one task per node "
                          "(hydra.launcher.tasks_per_node=1, srun --ntasks-per-node=1) with trainer.devices=G")
