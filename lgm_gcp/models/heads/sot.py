"""SoT's multi-headed global cross-covariance pooling (MGCrP) with singular-value power normalisation (svPN)
(Xie, Zeng, Wang, Zhou, Li, "So-ViT / SoT: Delving Deeper into Classification Head for Transformer",
arXiv 2104.10935), as its code computes it (jiangtaoxie/SoT @ 5da3c37: ``sot_src/representation/
multi_head_pooling.py``, ``covariance.py``, ``normalization/svPN.py``, ``model/classifier.py``).

word tokens Z (B, N, C) (the class token excluded, after the trunk's final norm)
-> W_R: Linear C -> 2·h·w_r (no bias, trunc-normal std 0.02) -> Q, K (B·h, N, w_r), head-major
-> S = (1/N) Q̃ᵀ K̃ (B·h, w_r, w_r), not symmetric, so every entry is kept
-> svPN: one power iteration from a learnt start vector v₀ (w_r,) ~ N(0, 1) shared by heads and samples,
   u = normalise(S v₀), v = normalise(Sᵀ u), ŝ = uᵀ S v;
   Y = ŝ^α u vᵀ + (S − ŝ u vᵀ) / (ŝ^{1−α} + 1e-5), α = ½ (≈ S / √ŝ: a scale, the spectrum's shape kept)
-> dropout on the h·w_r² entries (SoT-Small 0.5, Base 0.7) -> (B, h·w_r²)
fused with the class token: the reference's default ``sum_fc`` is FC_cls(z_cls) + FC_vis(MGCrP), which for
a linear classifier is one FC on the concatenation [z_cls, MGCrP] (both biases add up); the head returns
that concatenation (B, C + h·w_r²) so that every loss, L-GM's included, reads one feature vector.

``class_token``: ``auto`` takes a ViT's class token where timm's trunk has one (``backbone=timm``), else the
mean of the word tokens stands in for it (the documented fallback for a convolutional map, whose positions
are the tokens: SoT's ``OnlyVisualTokensClassifier`` has no class branch at all, ``none`` here).

``centre``: ``feature`` subtracts each of Q's and K's w_r column means, the paper's cross-covariance. The
reference calls ``adaptive_avg_pool2d`` on the 3-D (B·h, w_r, N) tensor, which PyTorch reads as one
unbatched image, so it subtracts **one scalar per (sample, head)**; ``scalar`` reproduces that, and the
presets for the published rows set it.

DropCov's ViT head (mingzeG/DropCov ``Transformers/src/representation/multi_head_pooling.py``; ``dropcov_vit``)
is this head with ``norm: none``, ``token_dropout: 0.2`` (a mask of whole tokens per sample and head, applied
to Q and K alike, survivors × 1.25; the reference gets it from Dropout2d's legacy 3-D reading) and
``cross_dropout: 0.5``. Its projection makes a third chunk of w_r per head that is never read; left out here.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lgm_gcp.models.heads.base import Bottleneck, DropRate, MLPNorm, MLPWidths, PoolingHead, full_precision
from lgm_gcp.options.fields import Count, Positive

Norm = Literal["svpn", "none"]
Centre = Literal["feature", "scalar"]
ClassToken = Literal["auto", "mean", "none"]  # auto: the trunk's class token, else the mean token
NORMS = typing.get_args(Norm)


class SingularValuePowerNorm(nn.Module):
    """svPN with one singular value and the remainder kept: (B', w, w) -> (B', w, w)."""

    def __init__(self, width: int, alpha: float = 0.5, iterations: int = 1, eps: float = 1e-5):
        super().__init__()
        self.start = nn.Parameter(torch.randn(width))
        self.alpha, self.iterations, self.eps = alpha, iterations, eps

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        v = self.start.to(s.dtype).view(1, -1, 1).expand(s.shape[0], -1, 1)
        for _ in range(self.iterations):
            u = F.normalize(s @ v, dim=1)
            v = F.normalize(s.mT @ u, dim=1)
        sigma = u.mT @ s @ v  # (B', 1, 1)
        top = u @ v.mT
        return sigma.pow(self.alpha) * top + (s - sigma * top) / (sigma.pow(1 - self.alpha) + self.eps)


class CrossCovariancePool(nn.Module):
    """MGCrP: tokens (B, N, C) -> (B, heads·width²)."""

    def __init__(self, channels: int, heads: int = 6, width: int = 24, norm: str = "svpn", centre: str = "feature",
                 token_dropout: float = 0.0, cross_dropout: float = 0.0, alpha: float = 0.5):
        super().__init__()
        self.heads, self.width, self.centre = heads, width, centre
        self.project = nn.Linear(channels, 2 * heads * width, bias=False)
        nn.init.trunc_normal_(self.project.weight, std=0.02)
        self.norm = SingularValuePowerNorm(width, alpha) if norm == "svpn" else nn.Identity()
        self.token_dropout, self.cross_dropout = token_dropout, nn.Dropout(cross_dropout)
        self.out_features = heads * width * width

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        dims = (1,) if self.centre == "feature" else (1, 2)
        return x - x.mean(dims, keepdim=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        qk = self.project(tokens).view(b, n, 2, self.heads, self.width).permute(2, 0, 3, 1, 4)
        q, k = (t.reshape(b * self.heads, n, self.width) for t in qk)
        if self.training and self.token_dropout:
            mask = F.dropout(q.new_ones(b * self.heads, n, 1), self.token_dropout)
            q, k = q * mask, k * mask
        with torch.autocast(tokens.device.type, enabled=False):  # the matrix part in float32 (or float64)
            q, k = full_precision(q), full_precision(k)
            s = self._centred(q).mT @ self._centred(k) / n
            return self.cross_dropout(self.norm(s).reshape(b, -1))


class SoTHead(PoolingHead):
    """``head=sot``: [class token or mean token, MGCrP(word tokens)] -> (B, C + heads·width²).

    Takes maps (B, C, h, w), whose h·w positions are the tokens, or (maps, class_token (B, C)) from a trunk
    asked for its class token (``uses_class_token``; ``lgm_gcp.models.build``)."""

    preferred_last_stride = 2
    min_positions = 2  # a cross-covariance of one token is zero
    uses_class_token = True

    def __init__(self, in_channels: int, heads: Count = 6, width: Count = 24, norm: Norm = "svpn",
                 centre: Centre = "feature", class_token: ClassToken = "auto", token_dropout: DropRate = 0.0,
                 cross_dropout: DropRate = 0.0, alpha: Positive = 0.5, dropout: DropRate = 0.0, mlp: MLPWidths = (),
                 mlp_norm: MLPNorm = False, bottleneck: Bottleneck = None):
        super().__init__()
        self.cross = CrossCovariancePool(in_channels, heads, width, norm, centre, token_dropout, cross_dropout, alpha)
        self.class_token = class_token
        self.pool = self._pool
        self._finish(self.cross.out_features + (in_channels if class_token != "none" else 0),
                     dropout, mlp, mlp_norm, bottleneck)

    def _pool(self, maps) -> torch.Tensor:
        maps, cls = maps if isinstance(maps, tuple) else (maps, None)
        tokens = maps.flatten(2).mT  # (B, N, C)
        pooled = self.cross(tokens)
        if self.class_token == "none":
            return pooled
        if cls is None or self.class_token == "mean":
            cls = tokens.mean(1)
        return torch.cat([cls.to(pooled.dtype), pooled], dim=1)
