"""The embedded demo's small CNN: pairs of 3x3 conv-BN-ReLU, max-pooling between stages."""

from __future__ import annotations

from typing import Sequence

from torch import nn


class SmallCNN(nn.Sequential):
    """(B, in_channels, H, W) -> (B, widths[-1], H / 2^(len(widths)-1), ...)."""

    recipe: dict = {}

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128)):
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        super().__init__(*layers)
        self.out_channels = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
