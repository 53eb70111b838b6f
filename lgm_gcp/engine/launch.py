"""Launch: one process, N spawned DDP workers, or (already) one rank of torchrun.

The Hydra job composes once, resolves the config to plain containers and picks one run dir; then
``launch`` runs the worker here (1 device) or spawns ``trainer.devices`` workers with the start
method ``spawn`` (NCCL on GPUs, gloo on CPU). Each spawned job builds and tears down its own
process group, so this works inside multirun sweeps. If one rank raises, ``start_processes``
terminates the others and the launcher exits non-zero.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException, ProcessRaisedException

from lgm_gcp import errors
from lgm_gcp.assemble import check_network
from lgm_gcp.engine.signals import end_preempted, preemption_signals
from lgm_gcp.engine.train import run
from lgm_gcp.errors import ConfigError, UserError
from lgm_gcp.options.groups import TARGET_GROUPS
from lgm_gcp.options.instantiate import locate


def resolve_devices(devices: Any, accelerator: str) -> int:
    if devices == "auto":
        use_cuda = accelerator != "cpu" and torch.cuda.is_available()
        return torch.cuda.device_count() if use_cuda else 1
    try:
        n = int(devices)
    except (TypeError, ValueError):
        raise ConfigError(f"trainer.devices={devices!r} is not valid; give a positive integer or auto") from None
    if n < 1:
        raise ConfigError(f"trainer.devices={n} must be at least 1")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=cuda but no CUDA device is visible; "
                          "use trainer.accelerator=cpu (or auto)")
    if accelerator != "cpu" and torch.cuda.is_available() and n > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices={n} but only {torch.cuda.device_count()} GPUs are visible")
    return n


def check_targets(cfg: Mapping[str, Any]) -> None:
    """Every group's ``_target_`` can be imported: one line naming the key otherwise."""
    for group in TARGET_GROUPS:
        node = cfg.get(group)
        if isinstance(node, Mapping) and "_target_" in node:
            locate(node["_target_"], group)


def check_before_spawning(cfg: Mapping[str, Any], world_size: int) -> None:
    """What would otherwise fail inside every worker: the batch split and the dataset's files."""
    batch = cfg["trainer"]["batch_size"]
    if batch % world_size:
        raise ConfigError(f"trainer.batch_size={batch} must be divisible by the {world_size} processes "
                          f"(trainer.devices={world_size}); e.g. trainer.batch_size={batch // world_size * world_size}")
    from lgm_gcp.data.check import check_dataset

    check_dataset(cfg["dataset"])
    check_network(cfg)


def setup_worker_logging(run_dir: Path, rank: int) -> None:
    root = logging.getLogger()
    if rank == 0 and not any(isinstance(h, logging.FileHandler) for h in root.handlers):
        fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(run_dir / "train.log")]
        for h in handlers:
            h.setFormatter(fmt)
            root.addHandler(h)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _worker(local_rank: int, world_size: int, port: int, cfg: Mapping, run_dir: str, overrides, choices,
            user_errors) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    setup_worker_logging(Path(run_dir), local_rank)
    try:
        run(cfg, run_dir, overrides, choices)
    except UserError as e:  # the launcher re-raises it as one line; a bug keeps its traceback
        user_errors.put((type(e).__name__, str(e)))
        raise
    # Every file is written and closed. Leave without running C++ static destructors: after the
    # process group is gone, gloo's can abort the process ("terminate called without an active
    # exception"), which would turn a finished run into a failed one.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def forward_signals(processes):
    """Pass the preemption signals on to the spawned workers, which checkpoint and stop; the handlers
    installed before are back in place afterwards, for ``end_preempted`` to hand the signal on."""

    def forward(signum, frame):
        for p in processes:
            if p.is_alive():
                os.kill(p.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in preemption_signals()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


BROKEN_COLLECTIVE = ("Connection closed by peer", "Connection reset by peer")


def root_cause(context, exc: ProcessException) -> ProcessException:
    """torch reports whichever failed rank it noticed first. When that rank only died because a
    collective broke (gloo's 'Connection closed by peer') as another rank crashed, report the rank whose
    own error broke it: its traceback is in its error file."""
    if not isinstance(exc, ProcessRaisedException) or not any(s in str(exc) for s in BROKEN_COLLECTIVE):
        return exc
    for index, path in enumerate(context.error_files):
        if index == exc.error_index or not os.access(path, os.R_OK):
            continue
        with open(path, "rb") as f:
            trace = pickle.load(f)  # what torch's spawn wrapper wrote: the formatted traceback
        if not any(s in trace for s in BROKEN_COLLECTIVE):
            return ProcessRaisedException(f"\n\n-- Process {index} terminated with the following error:\n{trace}",
                                          index, context.processes[index].pid)
    return exc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cfg: Mapping[str, Any], run_dir: str | Path, overrides=None, choices=None) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tcfg = cfg["trainer"]
    n = resolve_devices(tcfg["devices"], tcfg["accelerator"])
    check_targets(cfg)
    if "WORLD_SIZE" in os.environ or n == 1:  # a single process, or one rank under torchrun
        summary = run(cfg, run_dir, overrides, choices)
    else:
        check_before_spawning(cfg, n)
        # when one rank fails, torch terminates the others and warns about each; the failure itself is reported
        logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
        user_errors = mp.get_context("spawn").SimpleQueue()
        context = mp.start_processes(_worker, nprocs=n, join=False, start_method="spawn",
                                     args=(n, free_port(), dict(cfg), str(run_dir), overrides, choices, user_errors))
        with forward_signals(context.processes):
            try:
                while not context.join():
                    pass
            except ProcessException as e:
                if not user_errors.empty():
                    name, message = user_errors.get()
                    raise getattr(errors, name, UserError)(message) from None
                raise root_cause(context, e) from None
        summary = json.loads((run_dir / "metrics.json").read_text())
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if summary["status"] == "preempted":  # checkpointed and stopped: requeue, and never end as a success
        end_preempted(summary.get("preempted_by"))
    return summary
