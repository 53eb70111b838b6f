"""3G-Net head (Wang et al., "Deep Global Generalized Gaussian Networks", CVPR 2019), as its code computes it.

maps -> reduction (1x1 conv to d, BN, ReLU) = x₀ -> T re-weighting blocks applied cumulatively,
x_k = B_k(x_{k−1}, x₀) = x_{k−1} ⊙ w_k  (so x_T = x₀ ⊙ w₁ ⊙ … ⊙ w_T, one weight per position)
-> Σ = covariance(x_T) + 1e−7·I -> iSQRT (N = 5) -> column-order triangle vector (B, d(d+1)/2).

Block B(a, z), all convs 1x1 without bias, Kaiming fan_out (ReLU gain) but W_b (``gate_init``), BN weight 1 / bias 0:
  P  = BN(W₁a) ⊙ BN(W₂a)                       second-order interaction of two projections of a
  H₁ = ReLU(P + BN(W₂₁z))                      the original features injected
  H₂ = ReLU(BN(W₃H₁)) ⊙ ReLU(BN(W₄H₁))
  u  = W_b · ReLU(BN(W_a H₂))                  W_a: d -> d/4, W_b: d/4 -> 1, one score per position
  w  = sigmoid(u + c·u)                        c: a learnable 1x1, 1->1 conv (one scalar)
  B(a, z) = a ⊙ w

Where the code departs from the paper's equations (spec pooling.md 2.1-2.3): the paper estimates a
multivariate generalised Gaussian by a regularised, iteratively re-weighted MLE with a shape β and
Mahalanobis weights u_i^(β−1); the code has no β, no Σ⁻¹ and no Mahalanobis distance: the weights
are the learned sigmoid gates above. The figure multiplies X once by the last block's output; the
code multiplies every block's input, giving the cumulative product. The regulariser is the 1e−7·I
jitter only. Positions are weighted, then centred with the uniform mean. The vectorisation takes the
lower triangle row by row (= upper triangle column by column), unlike iSQRT-COV. The reference
always returns float32 and loops over the batch in Python; this one keeps the input dtype and is
batched. Per block 344,129 conv + 2,688 BN parameters at d = 256.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import nn

from lgm_gcp.errors import ConfigError
from lgm_gcp.models.heads.base import Activation, Bottleneck, DropRate, MLPNorm, MLPWidths, PoolingHead, ReduceInit
from lgm_gcp.models.heads.covariance import Algorithm, CovarianceSqrt, Sqrt, VecOrder, reduction_block
from lgm_gcp.options.fields import Count, Index, NonNeg


def _conv_bn(cin: int, cout: int, bn: bool = True) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if bn else nn.Sequential(conv)


# the gate score conv W_b: zero (every gate starts at ½) or kaiming (the reference's; saturates at start)
GateInit = Literal["zero", "kaiming"]


class ReweightBlock(nn.Module):
    """(a, z) both (B, d, h, w) -> a ⊙ w, w (B, 1, h, w) in (0, 1).

    ``gate_init``: ``kaiming`` is the reference's init of W_b (fan_out = 1, so std √2): u has a standard
    deviation of about 8 at the start, most gates sit saturated near 0 or 1 and the product of three
    shrinks the features about 13× against the GCP head's. On the digits demo (2×2 maps) that trained
    softmax from chance only after three epochs (98.0 % at ten) and large-margin to 82 %. ``zero`` (the
    default) starts W_b at zero, so every gate is ½ with the sigmoid's largest slope, as residual
    branches are zero-initialised: softmax then reads 99.1 % at ten epochs. The 3G presets keep
    ``kaiming``."""

    def __init__(self, dim: int, reduction: int = 4, gate_init: GateInit = "zero"):
        super().__init__()
        self.p1, self.p2, self.inject = _conv_bn(dim, dim), _conv_bn(dim, dim), _conv_bn(dim, dim)
        self.h1, self.h2 = _conv_bn(dim, dim), _conv_bn(dim, dim)
        self.squeeze = _conv_bn(dim, dim // reduction)
        self.score = _conv_bn(dim // reduction, 1, bn=False)
        self.scale = _conv_bn(1, 1, bn=False)
        self.relu = nn.ReLU(inplace=True)
        if gate_init == "zero":
            nn.init.zeros_(self.score[0].weight)

    def forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h1 = self.relu(self.p1(a) * self.p2(a) + self.inject(z))
        h2 = self.relu(self.h1(h1)) * self.relu(self.h2(h1))
        u = self.score(self.relu(self.squeeze(h2)))
        return a * torch.sigmoid(u + self.scale(u))


class ThreeGHead(PoolingHead):
    preferred_last_stride = 1
    min_positions = 2  # a covariance of one position is zero

    def __init__(self, in_channels: int, dim: Count = 256, blocks: Index = 3, iterations: Count = 5,
                 activation: Activation = "relu", sqrt: Sqrt = "newton_schulz", algorithm: Algorithm = "auto",
                 vec_order: VecOrder = "col", jitter: NonNeg = 1e-7, dropout: DropRate = 0.0, mlp: MLPWidths = (),
                 mlp_norm: MLPNorm = False, bottleneck: Bottleneck = None, reduce_init: ReduceInit = "kaiming",
                 gate_init: GateInit = "zero"):
        super().__init__()
        if blocks < 0:
            raise ConfigError(f"head.blocks={blocks} must be >= 0")
        self.reduce = reduction_block(in_channels, dim, activation, reduce_init)
        self.blocks = nn.ModuleList(ReweightBlock(dim, gate_init=gate_init) for _ in range(blocks))
        self.cov = CovarianceSqrt(iterations, sqrt, vec_order, jitter, algorithm)
        self.pool = self._pool
        self._finish(dim * (dim + 1) // 2, dropout, mlp, mlp_norm, bottleneck)

    @classmethod
    def check_composition(cls, config: Mapping[str, Any]) -> None:
        """Refuse L-GM with its margin or likelihood on: both pull each feature to its class mean, and the 3G
        gates get there by closing (sigmoid -> 0), which collapses features and means to the origin (chance
        over 10 digits epochs; docs/heads.md, "Every loss on every head")."""
        loss = config.get("loss") or {}
        if not str(loss.get("_target_", "")).endswith("LGMLoss"):
            return
        margin = loss["margin"]
        margin_on = margin["value"] > 0 or (margin["policy"] != "CONSTANT" and margin["max"] > 0)
        if loss["likelihood_weight"] > 0 or margin_on:
            raise ConfigError(
                "loss=lgm with head=3g does not train: L-GM's margin and likelihood terms pull each feature to its "
                "class mean, and the 3G gates get there by closing (sigmoid -> 0), which collapses features and "
                "means to the origin (chance accuracy over 10 digits epochs); use head=gcp, or turn both terms off "
                "with loss.likelihood_weight=0 loss.margin.value=0 loss.margin.max=0 (99.3 % on digits)")

    def _pool(self, maps: torch.Tensor) -> torch.Tensor:
        x0 = self.reduce(maps)
        x = x0
        for block in self.blocks:
            x = block(x, x0)
        return self.cov(x)
