"""The run's record of where and how it ran (``environment.yaml`` beside ``config.yaml``), one entry per
start of the run (a resumed or requeued run appends one): the command line, the host, the world size,
the versions of Python, torch, torchvision, CUDA, cuDNN, Hydra and OmegaConf, and the git commit of the
lgm-gcp checkout it ran from, with a dirty flag (none for an install from a wheel)."""

from __future__ import annotations

import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import omegaconf
import torch
import torchvision
import yaml

SOURCE = Path(__file__).resolve().parents[2]  # the checkout holding lgm_gcp/, for an editable install


def git_state(folder: Path = SOURCE) -> dict | None:
    """{commit, dirty} of the git checkout at ``folder``, or None where it is none (or git is absent)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0 or not (folder / "lgm_gcp").is_dir():
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment(world_size: int) -> dict[str, Any]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "host": socket.gethostname(),
        "world_size": world_size,
        "git": git_state(),
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__),  # TorchVersion: a str
                     "torchvision": str(torchvision.__version__), "cuda": torch.version.cuda, "cudnn": cudnn,
                     "hydra": hydra.__version__, "omegaconf": omegaconf.__version__},
    }


def append_environment(run_dir: Path, world_size: int) -> None:
    """Add this start's entry to ``run_dir/environment.yaml`` (earlier starts are kept)."""
    path = Path(run_dir) / "environment.yaml"
    starts = (yaml.safe_load(path.read_text()) or {}).get("starts", []) if path.is_file() else []
    path.write_text(yaml.safe_dump({"starts": [*starts, environment(world_size)]}, sort_keys=False))
