"""iSICE (Rahman, Koniusz, Wang, Zhou, Moghadam, Sun, "Learning Partial Correlation based Deep Visual
Representation for Image Classification", CVPR 2023): a sparse inverse covariance (partial correlation)
estimated inside the layer, as its code computes it (csiro-robotics/iSICE ``src/representation/SICE.py``,
``SICE._sice``, at e90a5b8).

maps (B, C, h, w) -> 1×1 reduction to d (no bias) + BN + ReLU -> Σ = (1/M) X_c X_cᵀ, C = Σ / tr Σ
R = 1e-10·𝟙𝟙ᵀ + 1e-9·diag(u), u ~ U(0, 1)^d drawn on every call (train and eval), shared by the batch
P₀ = inv(C + R), where inv(S) = (Z_K / √tr S)², Z_K the K-th (K = 7) coupled Newton–Schulz iterate of
     S / tr S: a saturating spectral function (≈ 292 at most for a trace-normalised eigenvalue near 0), not S⁻¹
n projected-gradient steps on −log det P + tr(CP) + λ‖P‖₁, with P = P⁺ − P⁻ split at the current P:
  G = sym(C) − inv(P + R),  η_i = η (1 − i/(n − 1))
  P⁺ ← relu(relu(P) − η_i (G + λ)),  P⁻ ← relu(relu(−P) − η_i (λ − G)),  P ← sym(P⁺ − P⁻)
out = P_n / √tr P_n -> upper triangle (B, d(d+1)/2). Gradients: autograd through the unrolled steps
(the reference's hand-written inverse-root backward returns the transposed gradient, fast-MPN-COV issue 28;
every use here is symmetrised, so the two agree).

Defaults: n = 5, λ = 0.01, η = 5.0: ``main.py``'s, which the README's command for the published fine-grained
rows keeps (``train_iSICE_model.sh`` sets η = 1.0 for its ConvNeXt-T recipe). ``recompute`` (default on)
runs each inverse's iterations again in the backward instead of storing them (same gradient).
Departures: n = 1 divides by zero in the reference (η_0 = η·(1 − 0/0));
here a single step takes the full η. n = 0 gives the regularised precision P₀ alone (the paper's
"Precision Ω" rows, normalised like the rest). The output normalisation follows the code's last revision
(P/√tr P; earlier revisions divided by tr P or tr Σ); which one produced the published numbers is not
recorded in the repository. The matrix part always runs in float32 (or float64), autocast off.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

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
from lgm_gcp.options.fields import Count, Index, NonNeg


def trace(x: torch.Tensor) -> torch.Tensor:
    """(B, d, d) -> (B, 1, 1)."""
    return x.diagonal(dim1=-2, dim2=-1).sum(-1).view(-1, 1, 1)


def newton_schulz_inverse_root(x: torch.Tensor, iterations: int = 7) -> torch.Tensor:
    """(B, d, d) -> Z_K / √tr x: the coupled iteration on x / tr x (Y₀ = A, Z₀ = I, T = ½(3I − ZY),
    Y ← YT, Z ← TZ), the inverse-root side of iSQRT-COV's."""
    tr = trace(x)
    a = x / tr
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    y, z = a, eye.expand_as(a)
    for k in range(iterations):
        t = 1.5 * eye - 0.5 * (z @ y)
        if k < iterations - 1:  # the last Y is never read
            y = y @ t
        z = t @ z
    return z / tr.sqrt()


def sparse_inverse_covariance(c: torch.Tensor, u: torch.Tensor, steps: int = 5, sparsity: float = 0.01,
                              step_size: float = 1.0, ns_iterations: int = 7, recompute: bool = False) -> torch.Tensor:
    """iSICE's solver: trace-normalised covariances c (B, d, d), regulariser draw u (d,) -> P_n / √tr P_n.
    ``recompute``: keep only each inverse's input for the backward and run its K iterations again there
    (``torch.utils.checkpoint``): the same gradient, about a third more time, and of the (B, d, d) tensors
    autograd would hold (three per iteration, K = 7, for each of the n + 1 inverses) one per inverse."""
    reg = 1e-10 + 1e-9 * torch.diag(u.to(c.dtype))

    def plain_inverse(s):
        z = newton_schulz_inverse_root(s + reg, ns_iterations)
        return z @ z

    def inverse(s):
        if recompute and torch.is_grad_enabled() and s.requires_grad:
            return checkpoint(plain_inverse, s, use_reentrant=False)
        return plain_inverse(s)

    p = inverse(c)
    sym_c = 0.5 * (c + c.mT)
    for i in range(steps):
        decay = 1.0 - i / (steps - 1) if steps > 1 else 1.0
        grad = sym_c - inverse(p)
        plus = torch.relu(torch.relu(p) - step_size * decay * (grad + sparsity))
        minus = torch.relu(torch.relu(-p) - step_size * decay * (sparsity - grad))
        p = plus - minus
        p = 0.5 * (p + p.mT)
    return p / trace(p).sqrt()


class SparseInverseCovariance(nn.Module):
    """(B, d, h, w) -> (B, d(d+1)/2)."""

    def __init__(self, steps: int = 5, sparsity: float = 0.01, step_size: float = 1.0, ns_iterations: int = 7,
                 recompute: bool = True):
        super().__init__()
        self.steps, self.sparsity, self.step_size, self.ns_iterations = steps, sparsity, step_size, ns_iterations
        self.recompute = recompute

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(maps.device.type, enabled=False):
            sigma = covariance(full_precision(maps))
            u = torch.rand(sigma.shape[-1], device=sigma.device, dtype=sigma.dtype)
            p = sparse_inverse_covariance(sigma / trace(sigma), u, self.steps, self.sparsity, self.step_size,
                                          self.ns_iterations, self.recompute)
            return triu_vec(p)


class ISICEHead(PoolingHead):
    """``head=isice``: reduction -> sparse inverse covariance -> (B, d(d+1)/2)."""

    preferred_last_stride = 2  # the reference keeps ResNet's stride-2 layer4 (14×14 at 448 px)
    min_positions = 2  # a covariance of one position is zero

    def __init__(self, in_channels: int, dim: Count = 256, steps: Index = 5, sparsity: NonNeg = 0.01,
                 step_size: NonNeg = 5.0, ns_iterations: Count = 7, recompute: bool = True,
                 activation: Activation = "relu",
                 reduce_init: ReduceInit = "kaiming", dropout: DropRate = 0.0, mlp: MLPWidths = (),
                 mlp_norm: MLPNorm = False, bottleneck: Bottleneck = None):
        super().__init__()
        self.reduce = reduction_block(in_channels, dim, activation, reduce_init)
        self.sice = SparseInverseCovariance(steps, sparsity, step_size, ns_iterations, recompute)
        self.pool = self._pool
        self._finish(dim * (dim + 1) // 2, dropout, mlp, mlp_norm, bottleneck)

    def _pool(self, maps: torch.Tensor) -> torch.Tensor:
        return self.sice(self.reduce(maps))
