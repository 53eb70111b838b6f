"""Softmax cross-entropy on a linear classifier, with optional label smoothing and class weights."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from lgm_gcp.errors import ConfigError
from lgm_gcp.losses.base import ClassifierInit, LinearCriterion
from lgm_gcp.options.fields import Probability


class SoftmaxLoss(LinearCriterion):
    """loss = CE(W x + b, y), mean over the non-ignored samples. features (B, D), targets (B,)."""

    def __init__(self, in_features: int, num_classes: int, init: ClassifierInit = "default",
                 label_smoothing: Probability = 0.0, class_weights: Sequence[float] | None = None,
                 ignore_index: int = -100):
        super().__init__(in_features, num_classes, init)
        if class_weights is not None and len(class_weights) != num_classes:
            raise ConfigError(f"loss.class_weights has {len(class_weights)} entries; "
                              f"expected num_classes={num_classes}")
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        w = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        return F.cross_entropy(logits, targets, weight=w, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing, reduction=reduction)

    def forward(self, features: torch.Tensor, targets: torch.Tensor, step: int = 0):
        logits = self.logits(features)
        loss = self.cross_entropy(logits, targets)
        return loss, logits, {}
