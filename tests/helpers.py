"""Importable test doubles (spawned DDP workers import them by name)."""

import os

import torch

from lgm_gcp.models.backbones.small_cnn import SmallCNN


class FailsOnRank1(SmallCNN):
    """A backbone whose rank-1 replica raises at its 3rd training forward."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        FailsOnRank1.calls += 1
        if os.environ.get("RANK") == "1" and FailsOnRank1.calls == 3:
            raise RuntimeError("injected failure on rank 1")
        return super().forward(x)


class NanGradient(SmallCNN):
    """Finite outputs and loss, NaN gradients: adds 0 * sqrt(0) to the maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = super().forward(x)
        return maps + 0.0 * torch.sqrt(maps.sum() * 0.0)
