"""OmegaConf resolvers used by conf/: collision-free run dirs, job-dir names, the --help group list."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from lgm_gcp.config.metafile import with_generated
from lgm_gcp.options.groups import NON_GROUP_FOLDERS
from lgm_gcp.schedules.policies import family_of, lookup

_UNIQUE: dict = {}


def unique_dir(path: str) -> str:
    """Claim ``path`` (or ``path-1``, ``path-2`` ...) by creating it, so two runs that start in the
    same second never share a folder. Memoised per process: Hydra may resolve the run dir twice."""
    if path in _UNIQUE:
        return _UNIQUE[path]
    candidate, n = path, 0
    while True:
        try:
            os.makedirs(candidate, exist_ok=False)
            break
        except FileExistsError:
            n += 1
            candidate = f"{path}-{n}"
    _UNIQUE[path] = candidate
    return candidate


def job_dirname(override_dirname: str, job_num) -> str:
    """A multirun job folder named from its overrides (deterministic), safe as one path component."""
    name = re.sub(r"[^][A-Za-z0-9_.,=+-]", "_", str(override_dirname))
    return name[:200] if name else f"job{job_num}"


def config_groups() -> str:
    """Every user-facing config group with its options, one line each, for --help: the YAMLs of each
    folder of conf/, and for ``experiment`` also the metafiles' generated presets."""
    root = resources.files("lgm_gcp.conf")
    lines = []
    groups = (p.name for p in root.iterdir() if p.is_dir() and p.name not in NON_GROUP_FOLDERS)
    for group in sorted(groups):
        yamls = (Path(o.name).stem for o in (root / group).iterdir() if o.name.endswith(".yaml"))
        options = with_generated(group, yamls)
        if options:
            lines.append(f"  {group}: {', '.join(options)}")
    return "\n".join(lines)


def gcp_family(backbone_target: str) -> str:
    return family_of(backbone_target)


def gcp_policy_value(policy: str, family: str, key: str):
    return lookup(policy, family, key)


def gpu_of_job(job_num, gpus) -> str:
    """The GPU a parallel sweep job uses: job number modulo the number of GPUs."""
    return str(int(job_num) % max(int(gpus), 1))


def slurm_gpus(accelerator: str, devices, tasks_per_node) -> int | None:
    """GPUs a SLURM job asks for on each node: none for trainer.accelerator=cpu, else one per rank
    (trainer.devices workers in one task, or one per task)."""
    if accelerator == "cpu":
        return None
    return max(1 if devices == "auto" else int(devices), int(tasks_per_node or 1))


def register_resolvers() -> None:
    for name, fn in (
        ("lgm_gcp.gpu_of_job", gpu_of_job),
        ("lgm_gcp.slurm_gpus", slurm_gpus),
        ("lgm_gcp.family", gcp_family),
        ("lgm_gcp.gcp_policy", gcp_policy_value),
        ("lgm_gcp.unique_dir", unique_dir),
        ("lgm_gcp.job_dirname", job_dirname),
        ("lgm_gcp.groups", config_groups),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
