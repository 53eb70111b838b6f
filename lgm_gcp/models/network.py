"""The network a run trains: backbone -> head -> criterion (which owns the classifier weights)."""

from __future__ import annotations

import torch
from torch import nn


class Network(nn.Module):
    """images (B, C, H, W) -> maps (B, C', h, w) -> features (B, D) -> logits (B, classes).

    ``forward(images)`` returns prediction logits; ``forward(images, targets, step)`` returns the
    criterion's ``(loss, logits, logs)``. One module, so DDP all-reduces the classifier too.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, criterion: nn.Module):
        super().__init__()
        self.backbone, self.head, self.criterion = backbone, head, criterion

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None, step: int = 0):
        features = self.features(images)
        if targets is None:
            return self.criterion.logits(features)
        return self.criterion(features, targets, step)
