"""Flatten pooling, as torchvision's VGG classifier: (B, C, h, w) -> adaptive average pool to
(size, size) -> flatten -> (B, C·size²). With VGG-16-BN maps (512 channels, 7×7 at 224²) and the
backbone's recipe MLP 4096-4096 (ReLU, Dropout 0.5) this is the 25088 → 4096 → 4096 classifier of
torchvision's ``vgg16_bn`` (138,365,992 parameters at 1000 classes), which the large-margin
paper's ImageNet VGG-16 row uses."""

from __future__ import annotations

import torch
from torch import nn

from lgm_gcp.models.heads.base import Bottleneck, DropRate, MLPNorm, MLPWidths, PoolingHead
from lgm_gcp.options.fields import Count


class FlattenPool(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(size)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(maps), 1)


class FlattenHead(PoolingHead):
    preferred_last_stride = 2

    def __init__(self, in_channels: int, size: Count = 7, dropout: DropRate = 0.0, mlp: MLPWidths = (),
                 mlp_norm: MLPNorm = False, bottleneck: Bottleneck = None):
        super().__init__()
        # a smaller map would be repeated up to size x size, each position counted size²/(h·w) times: the
        # classifier's effective LR grows with it (small_cnn's 2x2 digits map at size 7 trained to 16 %)
        self.min_positions = size * size
        self.min_positions_why = f"to flatten a {size}x{size} grid without repeating positions; head.size sets it"
        self.pool = FlattenPool(size)
        self._finish(in_channels * size * size, dropout, mlp, mlp_norm, bottleneck)
