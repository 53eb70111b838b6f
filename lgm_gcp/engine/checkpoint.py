"""Checkpoints: atomic writes, weights-only loading, exact-resume state, config-change checks.

A checkpoint is a plain dict of tensors and Python primitives (no OmegaConf objects, no numpy
arrays), so ``torch.load(weights_only=True)`` reads it:
``model`` (the unwrapped network's state_dict), ``optimizer``, ``epoch`` (the epoch in progress,
or the next one at an epoch boundary), ``step`` (global step), ``step_in_epoch``, ``best`` (best test
top-1 so far), ``history`` (metrics.json's epoch records), ``wall_time_s``, ``config`` (the resolved
config as a dict), ``world_size``, ``rng`` (torch CPU/CUDA, Python, numpy), ``scaler`` (the fp16
GradScaler's state, or None) and ``ema`` (the EMA weights, or None).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lgm_gcp.config.register import resumable_keys
from lgm_gcp.errors import CheckpointError
from lgm_gcp.loggers.base import flatten

# keys (and subtrees) that may differ between the checkpoint's config and the resuming run's: the
# fields the schema marks ``resumable``
RESUMABLE = resumable_keys()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP (``module.``) and torch.compile (``_orig_mod.``) wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {**np_state, "state": {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                        for k, v in np_state["state"].items()}},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = dict(state["numpy"])
    npst["state"] = {k: (np.array(v, dtype=np.uint32) if k == "key" else v) for k, v in npst["state"].items()}
    np.random.set_state(npst)


def save(path: Path, payload: Mapping[str, Any], keep_previous: bool = False) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a reader never sees half a file.
    ``keep_previous`` first links the current file to ``<name>-prev.pt``, the fallback of ``load_latest``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_previous and path.is_file():
        link_or_copy(path, previous_of(path))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(dict(payload), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` atomically (a hard link; a copy where links fail).
    Later atomic replacements of ``src`` leave ``dst`` intact."""
    if dst.exists() and os.path.samefile(src, dst):
        return  # already the same file (rename(2) between two links of one inode would be a no-op)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, disallowed pickle
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:120]}); delete it or pass trainer.resume=<good file>") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not an lgm-gcp training "
                              "checkpoint (a dict with model, optimizer, step, epoch)")
    missing = {"model", "optimizer", "step", "epoch"} - set(payload)
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {sorted(missing)}: not an lgm-gcp training checkpoint")
    return payload


def remove_stale_temporaries(folder: Path) -> list:
    """Delete the temp files of a writer that was killed mid-save (``.<name>.tmp<pid>``)."""
    stale = sorted(Path(folder).glob(".*.tmp*")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def previous_of(path: Path) -> Path:
    return path.with_name(f"{path.stem}-prev{path.suffix}")


def load_latest(path: Path, log=None) -> tuple:
    """Load ``path``; if it is corrupt or truncated, fall back to the previous good checkpoint.
    Returns (payload, the path actually loaded)."""
    try:
        return load(path), path
    except CheckpointError as error:
        previous = previous_of(path)
        if not previous.is_file():
            raise
        if log is not None:
            log.warning("%s; resuming from the previous checkpoint %s", error, previous)
        return load(previous), previous


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list:
    a, b = flatten(saved), flatten(current)
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>")
                  and not any(k == r or k.startswith(f"{r}.") for r in RESUMABLE))


def check_compatible(payload: Mapping[str, Any], config: Mapping[str, Any], world_size: int, path: Path) -> None:
    diffs = config_differences(payload.get("config", {}), config)
    if diffs:
        shown = ", ".join(f"{k}: {flatten(payload.get('config', {})).get(k, '<absent>')!r} -> "
                          f"{flatten(config).get(k, '<absent>')!r}" for k in diffs[:5])
        more = f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""
        raise CheckpointError(f"cannot resume from {path}: the config changed ({shown}{more}); "
                              "use a new run dir, or trainer.force_resume=true")
    saved_world = payload.get("world_size", world_size)
    if saved_world != world_size:
        raise CheckpointError(f"cannot resume from {path}: it was written by {saved_world} processes, this run has "
                              f"{world_size}; use trainer.devices={saved_world}, or trainer.force_resume=true")
