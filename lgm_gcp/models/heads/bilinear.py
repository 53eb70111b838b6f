"""Bilinear pooling and its compact (Tensor Sketch) approximation, as fast-MPN-COV ships them beside iSQRT-COV.

* ``bcnn`` (Lin, RoyChowdhury, Maji, "Bilinear CNN Models for Fine-grained Visual Recognition", ICCV 2015;
  reference ``src/representation/BCNN.py`` of jiangtaoxie/fast-MPN-COV): maps X (B, d, M) ->
  B = X Xᵀ / M (not centred) -> signed square root sign(b)·√(|b| + 1e-8) -> all d² entries -> ℓ2 (eps 1e-12)
  -> (B, d²). No parameters. Departure: where the trunk has more than ``max_channels`` channels (ResNet-50's
  2,048 would give 4,194,304 features, a 4.2e9-weight classifier for ImageNet), a 1×1 reduction (conv, BN,
  ReLU) to ``max_channels`` comes first; VGG-16's 512 (the published rows) passes unreduced.
* ``cbp`` (Gao, Beijbom, Zhang, Darrell, "Compact Bilinear Pooling", CVPR 2016, Tensor Sketch; reference
  ``src/representation/CBP.py``): per position x (d,), φ(x) = Re IFFT(FFT(x S₁) ⊙ FFT(x S₂)), the circular
  convolution of two count sketches S_k (d, D) with S_k[c, h_k(c)] = s_k(c), h_k uniform on {0..D−1},
  s_k = ±1; ⟨φ(x), φ(y)⟩ estimates ⟨x, y⟩², so Σ_positions φ approximates the bilinear vector. Summed
  over the M positions (not averaged), signed square root (1e-8), ℓ2 -> (B, D), D = 8192.
  The reference draws h₁, h₂, s₁, s₂ after ``torch.manual_seed(1)``, resetting the global RNG; here they
  are drawn in the same order from a private generator seeded ``seed`` (the same values at seed 1) and
  kept as buffers, so a checkpoint carries them. The reference's pre-1.8 ``torch.fft(x, 1)`` is
  ``torch.fft.fft`` here, batched over images instead of one at a time.
Both run in float32 (or float64) with autocast off: the signed root of tiny entries is lost in fp16.
"""

from __future__ import annotations

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
from lgm_gcp.models.heads.covariance import reduction_block
from lgm_gcp.options.fields import Count, Positive


def signed_sqrt_l2(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, D) -> ℓ2-normalised sign(x)·√(|x| + eps)."""
    return F.normalize(x.sign() * (x.abs() + eps).sqrt(), dim=1)


class BilinearPool(nn.Module):
    """(B, d, h, w) -> (B, d²): uncentred second moment, signed root, ℓ2."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(maps.device.type, enabled=False):
            x = full_precision(maps).flatten(2)
            moment = torch.bmm(x, x.mT).div_(x.shape[-1])
            return signed_sqrt_l2(moment.flatten(1), self.eps)


class BilinearHead(PoolingHead):
    """``head=bcnn``: [reduction where the trunk is wider than ``max_channels``] -> bilinear pool -> (B, d²)."""

    preferred_last_stride = 2  # VGG's conv5_3 map as it is (the reference drops only the last max-pool)

    def __init__(self, in_channels: int, max_channels: Count = 512, eps: Positive = 1e-8,
                 activation: Activation = "relu", reduce_init: ReduceInit = "kaiming", dropout: DropRate = 0.0,
                 mlp: MLPWidths = (), mlp_norm: MLPNorm = False, bottleneck: Bottleneck = None):
        super().__init__()
        d = min(in_channels, max_channels)
        reduce = reduction_block(in_channels, d, activation, reduce_init) if in_channels > d else nn.Identity()
        self.pool = nn.Sequential(reduce, BilinearPool(eps))
        self._finish(d * d, dropout, mlp, mlp_norm, bottleneck)


def count_sketches(channels: int, out_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two dense (d, D) count-sketch matrices, drawn as the reference draws them after seeding: h₁, h₂,
    then s₁, s₂."""
    gen = torch.Generator().manual_seed(seed)
    hashes = [torch.randint(0, out_dim, (channels,), generator=gen) for _ in range(2)]
    signs = [(2 * torch.randint(0, 2, (channels,), generator=gen) - 1).float() for _ in range(2)]
    sketches = []
    for h, s in zip(hashes, signs):
        m = torch.zeros(channels, out_dim)
        m[torch.arange(channels), h] = s
        sketches.append(m)
    return sketches[0], sketches[1]


class TensorSketchPool(nn.Module):
    """(B, d, h, w) -> (B, D): Σ_positions Re IFFT(FFT(x S₁) ⊙ FFT(x S₂)), signed root, ℓ2."""

    def __init__(self, channels: int, out_dim: int = 8192, seed: int = 1, eps: float = 1e-8):
        super().__init__()
        s1, s2 = count_sketches(channels, out_dim, seed)
        self.register_buffer("sketch1", s1)
        self.register_buffer("sketch2", s2)
        self.eps = eps

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(maps.device.type, enabled=False):
            x = full_precision(maps).flatten(2).mT  # (B, M, d)
            f1 = torch.fft.rfft(x @ self.sketch1.to(x.dtype), dim=-1)
            f2 = torch.fft.rfft(x @ self.sketch2.to(x.dtype), dim=-1)
            # the sum over positions commutes with the (linear) inverse transform: one IFFT per image
            pooled = torch.fft.irfft((f1 * f2).sum(1), n=self.sketch1.shape[1], dim=-1)
            return signed_sqrt_l2(pooled, self.eps)


class CompactBilinearHead(PoolingHead):
    """``head=cbp``: Tensor Sketch compact bilinear pooling -> (B, out_dim)."""

    preferred_last_stride = 2

    def __init__(self, in_channels: int, out_dim: Count = 8192, seed: int = 1, eps: Positive = 1e-8,
                 dropout: DropRate = 0.0, mlp: MLPWidths = (), mlp_norm: MLPNorm = False,
                 bottleneck: Bottleneck = None):
        super().__init__()
        self.pool = TensorSketchPool(in_channels, out_dim, seed, eps)
        self._finish(out_dim, dropout, mlp, mlp_norm, bottleneck)
