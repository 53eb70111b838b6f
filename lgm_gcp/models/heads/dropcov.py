"""DropCov (Wang, Gao, Zhang, Xie, Li, Hu, "DropCov: A Simple yet Effective Method for Improving Deep
Architectures", NeurIPS 2022), the CNN head as its code computes it (mingzeG/DropCov ``CNNs/models/
ResNet_ACD.py``, ``ResNet_ACD.forward`` and ``balance_rate``; ``CNNs/representation/eca_layer.py``).

maps (B, C, h, w) -> 1×1 reduction to d (no bias) + BN + ReLU = X (B, d, h, w); in training only:
  y = softmax over channels of conv1d_k(GAP(X))        (B, d), ECA's 3-tap conv without bias
  X ← X ⊙ (1 + y)
  r_b = Σ(X_b) 𝟙 (row sums of each covariance), c_b = cos(y_b, r_b)
  p = clamp(1 − (10 / log₂ d) · mean_b c_b, 0, 1)      one rate per batch, no gradient through it
  X ← Dropout2d(p)(X)                                  whole channels per sample, survivors × 1/(1 − p)
then Σ = (1/M) X_c X_cᵀ (centred) -> upper triangle (B, d(d+1)/2). No matrix root, no normalisation: the
adaptive channel dropout stands in for the square root's decorrelation. At eval the ECA branch and the
dropout are skipped, so ECA's 3 weights act only through the training rate.

d: the code hard-codes 256 (the default here); the README's parameter counts (ResNet-50 32.0 M) fit
d = 128 (``dropcov128``). p uses the per-device batch, so each DDP rank draws its own rate, as in the
reference. The rate is read as a Python float (one device sync per step), as there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lgm_gcp.models.heads.base import (
    Activation,
    Bottleneck,
    DropRate,
    MLPNorm,
    MLPWidths,
    PoolingHead,
    ReduceInit,
    full_precision,
)
from lgm_gcp.models.heads.covariance import covariance, reduction_block, triu_vec
from lgm_gcp.options.fields import Count, Positive


class AdaptiveChannelDropout(nn.Module):
    """(B, d, h, w) -> (B, d, h, w): ECA re-weighting and the covariance-driven Dropout2d; identity at eval."""

    def __init__(self, channels: int, kernel: int = 3, rate_scale: float = 10.0):
        super().__init__()
        self.eca = nn.Conv1d(1, 1, kernel, padding=(kernel - 1) // 2, bias=False)
        self.rate_scale = rate_scale / math.log2(channels)
        self.last_rate = 0.0  # the rate of the last training batch, for logs and tests

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) -> y (B, d): softmax over channels of the 1-D conv of the channel means."""
        return torch.softmax(self.eca(x.mean((2, 3)).unsqueeze(1)).squeeze(1), dim=1)

    def rate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            row_sums = covariance(full_precision(x)).sum(-1)
            cosine = F.cosine_similarity(y.to(row_sums.dtype), row_sums, dim=1, eps=0.0)
            return float((1.0 - self.rate_scale * cosine.mean()).clamp(0.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        y = self.attention(x)
        x = x * (1.0 + y[:, :, None, None])
        self.last_rate = self.rate(x, y)
        return F.dropout2d(x, self.last_rate, training=True)


class CovarianceTriangle(nn.Module):
    """(B, d, h, w) -> (B, d(d+1)/2): the centred 1/M covariance's upper triangle, in float32 or float64."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(maps.device.type, enabled=False):
            return triu_vec(covariance(full_precision(maps)))


class DropCovHead(PoolingHead):
    """``head=dropcov`` (d = 256, the code's) / ``dropcov128`` (d = 128, the README's counts)."""

    preferred_last_stride = 1  # the reference builds ResNet's layer4 with stride 1 (14×14 at 224 px)
    # the rate formula is calibrated on 14×14 maps; small_cnn on the digits demo, 3 epochs: 94 % at 7×7,
    # 24 % at 4×4, 16 % at 2×2 (the rate starts near 0.85 there and 1/(1 − p) enters the covariance squared)
    min_positions = 49
    min_positions_why = ("its adaptive dropout rate, 1 - 10/log2(d) x the cosine of ECA's weights and the covariance's "
                         "row sums, starts near 0.85 on a 2x2 map, and the 1/(1-p) rescale then enters the "
                         "covariance squared: it is calibrated on 14x14 maps")

    def __init__(self, in_channels: int, dim: Count = 256, eca_kernel: Count = 3, rate_scale: Positive = 10.0,
                 activation: Activation = "relu", reduce_init: ReduceInit = "kaiming", dropout: DropRate = 0.0,
                 mlp: MLPWidths = (), mlp_norm: MLPNorm = False, bottleneck: Bottleneck = None):
        super().__init__()
        self.reduce = reduction_block(in_channels, dim, activation, reduce_init)
        self.drop = AdaptiveChannelDropout(dim, eca_kernel, rate_scale)
        self.cov = CovarianceTriangle()
        self.pool = self._pool
        self._finish(dim * (dim + 1) // 2, dropout, mlp, mlp_norm, bottleneck)

    def _pool(self, maps: torch.Tensor) -> torch.Tensor:
        return self.cov(self.drop(self.reduce(maps)))
