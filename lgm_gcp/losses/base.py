"""Shared pieces of the criteria: the linear classifier and its recipe initialisations, and the one-pass
softmax with its log-sum-exp that the fused losses use."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lgm_gcp.options.fields import RECIPE

# the classifier's init: default (PyTorch's) or normal (N(0, 0.01), zero bias); auto: the backbone's recipe
ClassifierInit = Annotated[Literal["default", "normal"], RECIPE]


def softmax_and_logsumexp(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax over dim 1 (N, C), log Σ_j e^{z_j} (N,)) from one softmax pass: the largest
    probability is e^{max z − lse} ≥ 1/C (well conditioned), so lse = max z − log max p; entries
    of −inf (masked classes) get probability 0. As accurate as ``torch.logsumexp`` in float32."""
    p = F.softmax(logits, 1)
    return p, logits.amax(1).sub_(p.amax(1).log_())


def make_linear(in_features: int, num_classes: int, init: str = "default") -> nn.Linear:
    """Linear(in_features -> num_classes). ``default``: PyTorch's U(±1/sqrt(in)); ``normal``:
    N(0, 0.01) weights and zero bias (the MobileNetV2, VGG and layer13 recipes)."""
    fc = nn.Linear(in_features, num_classes)
    if init == "normal":
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.zeros_(fc.bias)
    return fc


class LinearCriterion(nn.Module):
    """Base for criteria whose classifier is a Linear layer (softmax, large-margin)."""

    def __init__(self, in_features: int, num_classes: int, init: ClassifierInit = "default"):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be positive")
        self.num_classes = num_classes
        self.fc = make_linear(in_features, num_classes, init)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)
