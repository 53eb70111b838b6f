"""The training loop's own state and its running sums, typed.

``TrainState`` is what a checkpoint restores of the loop (beside the weights, optimizer, scaler, EMA
and RNG); its ``state_dict()`` keys are the checkpoint payload's top-level keys of the same names.
``Sums`` holds named running totals as one float64 tensor on the training device: adding to it never
synchronises with the host, and one all-reduce sums it over the ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from lgm_gcp.engine import distributed

# an epoch's totals: Σ loss·n over applied steps, top-1 and top-5 hits, images, skipped steps and their
# images (left out of the mean loss), and the seconds it ran (filled in at a mid-epoch checkpoint)
EPOCH_SUMS = ("loss", "top1", "top5", "images", "skipped_steps", "skipped_images", "seconds")
EVAL_SUMS = ("loss", "top1", "top5", "images")


class Sums:
    def __init__(self, names: Sequence[str], device, saved: Sequence[float] | None = None):
        self.names = tuple(names)
        self.values = torch.tensor(list(saved) if saved else [0.0] * len(self.names), dtype=torch.float64,
                                   device=device)

    def add(self, **amounts) -> None:
        """Add tensors or numbers to the named totals, in one in-place addition."""
        update = torch.zeros_like(self.values)
        for name, amount in amounts.items():
            update[self.names.index(name)] = amount
        self.values += update

    def __getitem__(self, name: str) -> float:
        return self.values[self.names.index(name)].item()

    def set(self, name: str, value: float) -> None:
        self.values[self.names.index(name)] = value

    def all_reduced(self) -> Sums:
        """A copy summed over every rank (a collective: every rank calls it)."""
        total = Sums(self.names, self.values.device)
        total.values = distributed.all_reduce_sum(self.values.clone())
        return total

    def tolist(self) -> list:
        return self.values.tolist()


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # global optimisation steps taken
    step_in_epoch: int = 0
    best: float | None = None  # the best validation (or test) top-1 so far
    epoch_sums: list | None = None  # EPOCH_SUMS of the epoch in progress, all-reduced, at a mid-epoch checkpoint
    # the last step's criterion logs (the L-GM margin ...) at a mid-epoch checkpoint: what the epoch's record
    # reports, which a rerun that has no step of the epoch left to take cannot recompute
    epoch_logs: dict | None = None
    landscape: list = field(default_factory=list)  # the landscape probe's records (trainer.landscape_every)
    # the epoch in progress, which no checkpoint holds as such: this rank's running sums (all-reduced into
    # epoch_sums at a mid-epoch checkpoint) and time.time() at its start, less what it ran before a resume
    epoch_totals: Sums | None = field(default=None, repr=False, compare=False)
    epoch_start: float = field(default=0.0, repr=False, compare=False)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch, "best": self.best,
                "epoch_sums": self.epoch_sums, "epoch_logs": self.epoch_logs, "landscape": list(self.landscape)}

    @classmethod
    def from_checkpoint(cls, payload: Mapping[str, Any]) -> TrainState:
        return cls(payload["epoch"], payload["step"], payload["step_in_epoch"], payload["best"],
                   payload.get("epoch_sums"), payload.get("epoch_logs"), list(payload.get("landscape", [])))
