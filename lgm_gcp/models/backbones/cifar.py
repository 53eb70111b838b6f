"""Backbones for 32x32 inputs: the large-margin paper's layer13, L-GM's CIFAR "simple" net, ResNet-20."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgm_gcp.options.fields import Count


def conv_bn_relu(cin: int, cout: int, padding: int = 1, bn_momentum: float = 0.1) -> list:
    conv = nn.Conv2d(cin, cout, 3, padding=padding, bias=False)
    return [conv, nn.BatchNorm2d(cout, momentum=bn_momentum), nn.ReLU(inplace=True)]


def _init_convs(module: nn.Module, mode: str) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")


class Layer13(nn.Sequential):
    """Large-margin softmax (BMVC 2019) CIFAR net: 3x conv128, pool, 3x conv256, pool, conv512 (pad 0,
    8 -> 6), conv256, conv128; every conv without bias + BN + ReLU. Maps (B, 128, 6, 6) at 32².
    Recipe: classifier N(0, 0.01), bias 0."""

    recipe = {"init": "normal"}

    def __init__(self, in_channels: int = 3):
        layers = conv_bn_relu(in_channels, 128) + conv_bn_relu(128, 128) + conv_bn_relu(128, 128)
        layers += [nn.MaxPool2d(2, 2)] + conv_bn_relu(128, 256) + conv_bn_relu(256, 256) + conv_bn_relu(256, 256)
        layers += [nn.MaxPool2d(2, 2)] + conv_bn_relu(256, 512, padding=0) + conv_bn_relu(512, 256)
        layers += conv_bn_relu(256, 128)
        super().__init__(*layers)
        self.out_channels = 128
        _init_convs(self, "fan_out")


class LGMSimple(nn.Sequential):
    """L-GM's CIFAR-100 example net: conv96, 4x conv96, pool, 4x conv192, pool, 4x conv384; 3x3 convs
    without bias, MSRA (fan-in) init, BN with Caffe's moving-average fraction 0.97 (momentum 0.03).
    Maps (B, 384, 8, 8) at 32²; with GAP the feature is the paper's post-ReLU D = 384."""

    recipe: dict = {}

    def __init__(self, in_channels: int = 3):
        layers, c = [], in_channels
        for stage, (width, count) in enumerate(((96, 5), (192, 4), (384, 4))):
            if stage:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(count):
                layers += conv_bn_relu(c, width, bn_momentum=0.03)
                c = width
        super().__init__(*layers)
        self.out_channels = 384
        _init_convs(self, "fan_in")


class BasicBlock(nn.Module):
    """CIFAR ResNet block with the parameter-free "option A" shortcut (strided identity + zero channels)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(out + shortcut)


class ResNet20(nn.Sequential):
    """He et al.'s CIFAR ResNet-20 (3 stages x 3 blocks, widths w/2w/4w), maps (B, 4w, 8, 8) at 32²."""

    recipe: dict = {}

    def __init__(self, in_channels: int = 3, width: Count = 16):
        layers = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c = width
        for stage in range(3):
            for block in range(3):
                out = width * 2**stage
                layers.append(BasicBlock(c, out, 2 if stage and block == 0 else 1))
                c = out
        super().__init__(*layers)
        self.out_channels = c
        _init_convs(self, "fan_out")
