"""The embedded demo's small CNN: pairs of 3x3 conv-BN-ReLU, max-pooling between stages."""

from __future__ import annotations

from typing import Literal, Sequence

from torch import nn


def make_norm(kind: str, channels: int) -> nn.Module:
    """``batch``: BatchNorm2d; ``group``: GroupNorm with 8 channels a group (batch-independent, so a
    DDP run equals a 1-process run with the same global batch); ``none``: identity."""
    norms = {"batch": nn.BatchNorm2d, "group": lambda c: nn.GroupNorm(max(c // 8, 1), c),
             "none": lambda c: nn.Identity()}
    return norms[kind](channels)  # the choices: SmallCNN's signature, checked at start-up


class SmallCNN(nn.Sequential):
    """(B, in_channels, H, W) -> (B, widths[-1], H / 2^(len(widths)-1), ...)."""

    recipe: dict = {}

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128),
                 norm: Literal["batch", "group", "none"] = "batch"):
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=norm == "none"), make_norm(norm, w),
                           nn.ReLU(inplace=True)]
                c = w
        super().__init__(*layers)
        self.out_channels = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
