"""Process-group helpers: who am I, which device, reductions. Works with world size 1 (no group)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lgm_gcp.errors import ConfigError


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(accelerator: str, local_rank: int) -> torch.device:
    if accelerator not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"trainer.accelerator={accelerator!r} is not valid; choose auto, cpu or cuda")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=cuda but no CUDA device is visible; use trainer.accelerator=cpu")
    if accelerator in ("auto", "cuda") and torch.cuda.is_available():
        # a SLURM task may see only its own GPU (--gpus-per-task) or all of the node's
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def setup(accelerator: str = "auto") -> DistEnv:
    """Join the process group described by RANK / WORLD_SIZE / LOCAL_RANK (set by the spawn
    launcher, by torchrun, or from SLURM's variables by engine/slurm.py); a single process needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(accelerator, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world,
                                device_id=device if device.type == "cuda" else None)
    return DistEnv(rank, world, local_rank, device)


def teardown(clean: bool = True) -> None:
    """Leave the process group. After a clean run every rank first waits for the others, so no
    rank exits while a peer's collective threads still talk to it (gloo aborts the process then)."""
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj):
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj
