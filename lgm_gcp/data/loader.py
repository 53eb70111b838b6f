"""Loader workers for image-folder datasets: how many, and one DataLoader per split kept for the run.

Each split's DataLoader is built once and its workers persist across epochs (``persistent_workers``):
an epoch only hands the batch sampler a new (seed, epoch, skip). Batches are pinned when the
training device is CUDA, and each worker keeps ``prefetch_factor`` batches ready.
"""

from __future__ import annotations

import multiprocessing
import os

import torch
from torch.utils.data import DataLoader

from lgm_gcp.data.images import sample_seed
from lgm_gcp.data.in_memory import epoch_generator, epoch_step_count, rank_share

MAX_AUTO_WORKERS = 8


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a SLURM allocation, a taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_num_workers(local_world_size: int = 1, cpus: int | None = None) -> int:
    """``trainer.num_workers=auto``: this rank's share of the node's CPUs less one for the rank
    itself, at least 1 and at most ``MAX_AUTO_WORKERS`` (8 decode ~4,000 ImageNet images/s on
    one core each, above what one GPU trains a ResNet-50 on). 0 inside a daemonic process (joblib's
    multiprocessing backend), which may not start children."""
    if multiprocessing.current_process().daemon:
        return 0
    cpus = available_cpus() if cpus is None else cpus
    return max(1, min(MAX_AUTO_WORKERS, cpus // max(1, local_world_size) - 1))


def resolve_num_workers(value) -> int:
    """An int as given, or ``auto`` for this node: ranks per node from LOCAL_WORLD_SIZE (torchrun,
    our spawn launcher), else SLURM_NTASKS_PER_NODE, else 1."""
    if value != "auto":
        return int(value)
    local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]
    return auto_num_workers(int(local))


def worker_context():
    """Fork where the platform has it, whatever the process's default: workers inherit the sample list
    instead of unpickling it, and inside a joblib (loky) sweep job, whose default context is loky's
    own, a DataLoader's workers would otherwise die at start (PyTorch #44687, Hydra #964)."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else None


class GlobalBatchSampler:
    """This rank's share of every global batch of one epoch (the last partial batch kept unless
    ``drop_last``), in the order one process would read them. Yields ``(index, augmentation seed)``
    keys for ``ImageSamples``; ``set_epoch`` moves it to another epoch or resume point."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, drop_last: bool = False):
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.steps = epoch_step_count(n, batch_size, world_size, drop_last)
        self.seed = self.epoch = self.skip = 0
        self.order: list = []  # drawn by set_epoch, which every epoch calls before iterating

    def set_epoch(self, seed: int, epoch: int, skip: int = 0) -> None:
        self.seed, self.epoch, self.skip = seed, epoch, skip
        self.order = torch.randperm(self.n, generator=epoch_generator(seed, epoch)).tolist()

    def __len__(self) -> int:
        return self.steps - self.skip

    def __iter__(self):
        for step in range(self.skip, self.steps):
            start = step * self.batch_size
            part = rank_share(min(self.batch_size, self.n - start), self.rank, self.world_size)
            yield [(i, sample_seed(self.seed, self.epoch, i))
                   for i in self.order[start + part.start: start + part.stop]]


class ShardSampler:
    """This rank's contiguous shard of the evaluation set (each image once across ranks), in batches."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1):
        shard = torch.arange(n).tensor_split(world_size)[rank]
        self.batches = [[(i, None) for i in chunk.tolist()] for chunk in shard.split(batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class KeptLoader:
    """A DataLoader over ``dataset`` rebuilt only when its batch layout changes (batch size, rank,
    world size, device), so its persistent workers live across epochs and evaluations."""

    def __init__(self, dataset, num_workers: int, prefetch_factor: int = 2, collate_fn=None):
        self.dataset, self.num_workers, self.prefetch_factor = dataset, num_workers, prefetch_factor
        self.collate_fn = collate_fn
        self.layout = self.loader = None

    def get(self, layout: tuple, make_sampler, device) -> DataLoader:
        """The DataLoader for ``layout``, built with ``make_sampler()`` as its batch sampler when new."""
        pin = torch.device(device).type == "cuda"
        if (layout, pin) != self.layout:
            self.layout = layout, pin
            workers = dict(persistent_workers=True, prefetch_factor=self.prefetch_factor,
                           multiprocessing_context=worker_context()) if self.num_workers else {}
            self.loader = DataLoader(self.dataset, batch_sampler=make_sampler(), num_workers=self.num_workers,
                                     pin_memory=pin, collate_fn=self.collate_fn, **workers,
                                     # its own generator: drawing the workers' base seed leaves the global RNG
                                     # alone (augmentation is seeded per image, so that seed decides nothing)
                                     generator=torch.Generator().manual_seed(0))
        return self.loader
