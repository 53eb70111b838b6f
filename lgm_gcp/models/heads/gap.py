"""Global average pooling: (B, C, h, w) -> (B, C)."""

from __future__ import annotations

import torch
from torch import nn

from lgm_gcp.models.heads.base import Bottleneck, DropRate, MLPNorm, MLPWidths, PoolingHead


class GlobalAvgPool(nn.Module):
    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.mean(dim=(2, 3))


class GAPHead(PoolingHead):
    preferred_last_stride = 2

    def __init__(self, in_channels: int, dropout: DropRate = 0.0, mlp: MLPWidths = (), mlp_norm: MLPNorm = False,
                 bottleneck: Bottleneck = None):
        super().__init__()
        self.pool = GlobalAvgPool()
        self._finish(in_channels, dropout, mlp, mlp_norm, bottleneck)
