"""One run folder, one writer.

A run holds an advisory lock (``flock``) on ``<run dir>/.lock`` for its lifetime; the OS releases it
when the process ends, however it ends, so a killed run never blocks its rerun. A second start into
a folder whose run is alive stops with one line before it touches any file there (it does not even
clean the live run's temporary files). ``check_run_dir`` also refuses a run dir that is a file or
whose name the file system cannot hold, before Hydra creates it.
"""

from __future__ import annotations

import os
from pathlib import Path

from lgm_gcp.errors import RunFolderError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, one writer is then up to the user
    fcntl = None

LOCK_NAME = ".lock"


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long to stat
        return False


def _name_max(path: Path) -> int:
    existing = next((p for p in [*path.parents] if _exists(p)), Path("."))
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _in_use(where: str, pid: str, key: str) -> RunFolderError:
    return RunFolderError(f"{where} is in use by a live run (pid {pid}); wait for it to end, or choose another {key}")


def _holder(run_dir: Path) -> str | None:
    """The pid written by the live holder of the run dir's lock, or None when nobody holds it."""
    lock = run_dir / LOCK_NAME
    if fcntl is None or not lock.is_file():
        return None
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return f.read().strip() or "?"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def check_run_dir(value: str, key: str = "hydra.run.dir") -> None:
    """Refuse a run dir that is a file, too long a name, or in use by a live run."""
    path = Path(value)
    limit = _name_max(path)
    for part in path.parts:
        if len(part.encode()) > limit:
            raise RunFolderError(f"{key}: the folder name '{part[:40]}...' has {len(part.encode())} bytes; "
                                 f"the file system allows {limit}")
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{key}={value} is a file, not a folder; choose another {key}")
    pid = _holder(path) if path.is_dir() else None
    if pid is not None:
        raise _in_use(f"{key}={value}", pid, key)


class RunLock:
    """Hold ``<run dir>/.lock`` exclusively (``with RunLock(run_dir):``); refuse if a live run holds it."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled, self.file = Path(run_dir), enabled and fcntl is not None, None

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(self.run_dir / LOCK_NAME, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            pid = self.file.read().strip() or "?"
            self.file.close()
            self.file = None
            raise _in_use(f"run folder {self.run_dir}", pid, "hydra.run.dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None
