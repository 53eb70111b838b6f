"""Global average pooling: (B, C, h, w) -> (B, C)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lgm_gcp.models.heads.base import PoolingHead


class GlobalAvgPool(nn.Module):
    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.mean(dim=(2, 3))


class GAPHead(PoolingHead):
    preferred_last_stride = 2

    def __init__(self, in_channels: int, dropout: float = 0.0, mlp: Sequence[int] = (), mlp_norm: bool = False,
                 bottleneck: int | None = None):
        super().__init__()
        self.pool = GlobalAvgPool()
        self._finish(in_channels, dropout, mlp, mlp_norm, bottleneck)
