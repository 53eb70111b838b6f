"""iSQRT-COV global covariance pooling (Li et al., CVPR 2018) as used by the GCP study (CVPR 2020).

maps (B, C, h, w) -> 1x1 conv reduction to d (no bias) + BN + ReLU/ReLU6 -> covariance
Σ = (1/M) X_c X_cᵀ (B, d, d), M = h·w, X_c centred per channel -> trace pre-normalisation A = Σ / tr Σ
-> N coupled Newton–Schulz steps  Y₀ = A, Z₀ = I,  T = ½(3I − Z Y),  Y ← Y T,  Z ← T Z
-> post-compensation C = √(tr Σ) · Y_N -> upper-triangular vector (B, d(d+1)/2): 32,896 at d = 256.

At N = 5 this is *not* √Σ for realistic spectra (every eigenvalue ratio λ/tr is mapped through the
scalar recurrence f_N); it is the function the papers trained with. ``head.sqrt`` picks another root:
``eigh`` the exact one by autograd (its backward is unstable for the repeated zero eigenvalues of a
rank-deficient Σ); ``taylor`` and ``pade`` (matrix Taylor polynomial and Padé approximant with the
Lyapunov backward, ICLR 2022) and ``svd_pade`` (exact root, Padé-approximated gradient, ICCV 2021) are in
``roots.py``.

Three algorithms compute the *same* function (``algorithm``; benchmarks/bench_heads.py measures them):

* ``matmul``: the coupled iteration with batched products. Centring by subtracting the mean instead
  of an M×M centring matrix, fused first step (Z₀ = I) and last step (only Y), ``baddbmm`` folding
  1.5I − ½Z·Y into one call, and a hand-written adjoint (``_NewtonSchulz``): 3 products per step
  forward and 6 back, no elementwise pass for a scale or a sum. The exact adjoint of a product costs
  two products, so ~3N + 6N products is this algorithm's floor (N = 5: 36, the reference spends 53).
* ``spectral``: every iterate is a polynomial in A, so iSQRT(Σ) = U diag(√s·f_N(λ/s)) Uᵀ with
  Σ = U diag(λ) Uᵀ (spec 1.6). Forward: one ``eigh`` plus the scalar recurrence. Backward: the
  Daleckii–Krein formula ∂L/∂Σ = U (K ∘ UᵀḠU) Uᵀ + (∂L/∂s)·I, whose divided differences
  K_ij = (f(a_i) − f(a_j))/(a_i − a_j) are carried through the recurrence itself
  (D[uv] = Du·v(b) + u(a)·Dv), so nothing divides by a_i − a_j: repeated and zero eigenvalues
  (rank-deficient Σ) are exact.
* ``gram`` (``gram.py``): the same iteration on the M×M Gram matrix of the M positions, by the
  push-through identity; it never forms a d×d matrix but the output. Where M < d (7×7 or 14×14 maps
  against d = 256) it costs a fraction of either d×d path.

``auto`` picks ``gram`` where M < d, else spectral on CPU and matmul on CUDA. The covariance and the
root always run in float32 or float64, also under autocast.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from lgm_gcp.errors import ConfigError
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
from lgm_gcp.models.heads.eigen import safe_eigh
from lgm_gcp.models.heads.gram import gram_isqrt
from lgm_gcp.models.heads.roots import polynomial_sqrt, svd_pade_sqrt
from lgm_gcp.options.fields import Count

# head.vec_order: the (row, col) indices of the triangle kept. row: the upper triangle row by row
# (iSQRT-COV); col: the lower one row by row, of a symmetric matrix the upper one column by column (3G-Net)
VEC_ORDERS = {"row": torch.triu_indices, "col": torch.tril_indices}
# newton_schulz: iSQRT-COV's; eigh: the exact root by autograd; taylor, pade, svd_pade: roots.py
Sqrt = Literal["newton_schulz", "eigh", "taylor", "pade", "svd_pade"]
# how newton_schulz is evaluated (same values); auto: gram where the map has fewer positions than dim
Algorithm = Literal["auto", "matmul", "spectral", "gram"]
VecOrder = Literal["row", "col"]  # row: iSQRT-COV checkpoints; col: 3G-Net checkpoints
ALGORITHMS = typing.get_args(Algorithm)


class _Covariance(torch.autograd.Function):
    """Σ = X_c X_cᵀ / M over positions (B, d, M) -> (B, d, d), X_c = X − mean_M X. Backward: one product,
    ∂L/∂X = (G + Gᵀ) X_c / M; the centring's own term, −mean_M of that, is zero because every row of
    X_c sums to zero (autograd would spend a second product on the other operand and a pass on it)."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor) -> torch.Tensor:
        centred = feats - feats.mean(dim=2, keepdim=True)
        ctx.save_for_backward(centred)
        return torch.bmm(centred, centred.transpose(1, 2)).div_(feats.shape[-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (centred,) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), centred).div_(centred.shape[-1])


def covariance(x: torch.Tensor) -> torch.Tensor:
    """(B, d, h, w) -> (B, d, d): the biased (1/M) covariance over the M = h·w positions."""
    return _Covariance.apply(x.reshape(x.shape[0], x.shape[1], -1))


class _NewtonSchulz(torch.autograd.Function):
    """The coupled iteration with a hand-written backward (pooling.md 1.7's adjoint, with transposes, so it
    is exact for any square input). Every step's three products keep their ½ in ``alpha`` and the adjoint's
    six accumulate in place, so neither pass spends an elementwise pass on a scale or a sum (autograd
    spent fourteen per call at N = 5). With h = −½ ∂L/∂T for T = 1.5I − ½ZY, Y' = YT, Z' = TZ:
      h = −½ (Yᵀ ∂Y' + ∂Z' Zᵀ),   ∂Y = ∂Y' Tᵀ + Zᵀ h,   ∂Z = Tᵀ ∂Z' + h Yᵀ."""

    @staticmethod
    def forward(ctx, sigma: torch.Tensor, iterations: int) -> torch.Tensor:
        trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1).view(-1, 1, 1)
        a = sigma / trace
        eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device).mul_(1.5)
        t0 = torch.add(eye, a, alpha=-0.5)  # first step with Z₀ = I: T₀ = 1.5I − ½A, Y₁ = A T₀, Z₁ = T₀
        y, z = torch.bmm(a, t0), t0
        steps = []  # (Y_k, Z_k, T_k) for k = 1 … N − 1
        for k in range(1, iterations):
            t = torch.baddbmm(eye, z, y, alpha=-0.5)
            steps.append((y, z, t))
            y, z = torch.bmm(y, t), (torch.bmm(t, z) if k < iterations - 1 else None)  # the last Z is unused
        ctx.save_for_backward(a, t0, trace, y, *[m for step in steps for m in step])
        return y * trace.sqrt()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, t0, trace, y_n, *flat = ctx.saved_tensors
        steps = [flat[i:i + 3] for i in range(0, len(flat), 3)]
        root = trace.sqrt()
        g_trace = torch.linalg.vecdot(grad.flatten(1), y_n.flatten(1)).view(-1, 1, 1) / (2 * root)
        g_y, g_z = grad * root, None
        for y, z, t in reversed(steps):
            h = torch.baddbmm(g_y, y.mT, g_y, beta=0.0, alpha=-0.5)
            if g_z is not None:
                h.baddbmm_(g_z, z.mT, alpha=-0.5)
            g_y, g_z = (torch.bmm(g_y, t.mT).baddbmm_(z.mT, h),
                        torch.bmm(h, y.mT) if g_z is None else torch.bmm(t.mT, g_z).baddbmm_(h, y.mT))
        g_a = torch.bmm(g_y, t0.mT).baddbmm_(a.mT, g_y, alpha=-0.5)  # ∂T₀ = Aᵀ ∂Y₁ + ∂Z₁, times −½
        if g_z is not None:
            g_a.add_(g_z, alpha=-0.5)
        g_trace -= torch.linalg.vecdot(g_a.flatten(1), a.flatten(1)).view(-1, 1, 1) / trace
        g_sigma = g_a.div_(trace)
        g_sigma.diagonal(dim1=-2, dim2=-1).add_(g_trace.view(-1, 1))
        return g_sigma, None


def newton_schulz_sqrt(sigma: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """iSQRT of a batch of SPD/PSD matrices (B, d, d): trace-normalise, N coupled NS steps, ×√trace."""
    if iterations < 1:
        raise ConfigError(f"head.iterations={iterations} must be at least 1")
    return _NewtonSchulz.apply(sigma, iterations)


def _scalar_map_and_divided_differences(a: torch.Tensor, iterations: int, with_dd: bool):
    """f_N at the eigenvalue ratios a (B, d) and, if asked, DD_ij = (f_N(a_i) − f_N(a_j))/(a_i − a_j)
    (B, d, d), f_N'(a_i) on the diagonal, by running the recurrence on values and divided differences.
    The (B, d, d) updates are in place: this loop is memory-bound."""
    y, z = a, torch.ones_like(a)
    dy = dz = None
    for k in range(iterations):
        t = 0.5 * (3.0 - z * y)
        if with_dd:
            yi, yj, zi, zj = y.unsqueeze(-1), y.unsqueeze(-2), z.unsqueeze(-1), z.unsqueeze(-2)
            ti, tj = t.unsqueeze(-1), t.unsqueeze(-2)
            if k == 0:  # y = a, z = 1: Dy = 1, Dz = 0, so Dt = −½ and Dz' = −½ everywhere
                dy = tj - 0.5 * yi
                dz = torch.full_like(dy, -0.5)
                dt2 = torch.empty_like(dy)  # −2 Dt, one buffer for every step
            else:
                torch.mul(dz, yj, out=dt2).addcmul_(zi, dy)
                dy.mul_(tj).addcmul_(yi, dt2, value=-0.5)
                if k < iterations - 1:  # the last step's Dz is never read
                    dz.mul_(ti).addcmul_(dt2, zj, value=-0.5)
        y, z = y * t, t * z
    return y, dy


class SpectralNewtonSchulz(torch.autograd.Function):
    """iSQRT (N coupled Newton–Schulz steps, trace-normalised, ×√trace) evaluated in the eigenbasis."""

    @staticmethod
    def forward(ctx, sigma: torch.Tensor, iterations: int) -> torch.Tensor:
        lam, u = safe_eigh(sigma)
        s = lam.sum(-1, keepdim=True)  # = tr Σ
        a = lam / s
        f, _ = _scalar_map_and_divided_differences(a, iterations, with_dd=False)
        ctx.save_for_backward(u, a, s)
        ctx.iterations = iterations
        return (u * (s.sqrt() * f).unsqueeze(-2)) @ u.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, a, s = ctx.saved_tensors
        f, dd = _scalar_map_and_divided_differences(a, ctx.iterations, with_dd=True)
        half_over_rs = 0.5 / s.sqrt()  # (B, 1); h below is twice Uᵀ sym(G) U
        h = u.transpose(-1, -2) @ (grad + grad.transpose(-1, -2)) @ u
        fprime = dd.diagonal(dim1=-2, dim2=-1)
        d_s = torch.linalg.vecdot(h.diagonal(dim1=-2, dim2=-1), 0.5 * f - a * fprime).unsqueeze(-1) * half_over_rs
        d_sigma = u @ dd.mul_(h).mul_(half_over_rs.unsqueeze(-1)) @ u.transpose(-1, -2)
        d_sigma.diagonal(dim1=-2, dim2=-1).add_(d_s)
        return d_sigma, None


def resolve_algorithm(algorithm: str, dim: int, positions: int | None, is_cuda: bool) -> str:
    """``auto`` -> ``gram`` where the map has fewer positions than channels (M < d), else ``matmul`` on
    CUDA and ``spectral`` on the CPU; any other choice is kept."""
    if algorithm != "auto":
        return algorithm
    if positions is not None and positions < dim:
        return "gram"
    return "matmul" if is_cuda else "spectral"


def isqrt(sigma: torch.Tensor, iterations: int = 5, algorithm: str = "auto") -> torch.Tensor:
    """iSQRT-COV's matrix function of (B, d, d) covariances by a d×d algorithm (same values); ``gram``
    needs the maps themselves (``gram_isqrt``), so here ``auto`` picks between matmul and spectral."""
    if algorithm not in ALGORITHMS or algorithm == "gram":
        raise ConfigError(f"head.algorithm={algorithm!r} is not valid for a covariance; "
                          "choose auto, matmul or spectral")
    algorithm = resolve_algorithm(algorithm, sigma.shape[-1], None, sigma.is_cuda)
    if algorithm == "spectral":
        if iterations < 1:
            raise ConfigError(f"head.iterations={iterations} must be at least 1")
        try:
            return SpectralNewtonSchulz.apply(sigma, iterations)
        except torch.linalg.LinAlgError:  # eigh did not converge: the iteration needs no decomposition
            pass
    return newton_schulz_sqrt(sigma, iterations)


def eigh_sqrt(sigma: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Exact √Σ by eigendecomposition (eigenvalues clamped at ``eps``), for comparison."""
    lam, u = torch.linalg.eigh(sigma)
    return (u * lam.clamp_min(eps).sqrt().unsqueeze(-2)) @ u.transpose(-1, -2)


def matrix_sqrt(sigma: torch.Tensor, sqrt: str, iterations: int = 5, algorithm: str = "auto") -> torch.Tensor:
    """(B, d, d) -> the root ``head.sqrt`` names (``iterations`` and ``algorithm``: Newton–Schulz's)."""
    if sqrt == "newton_schulz":
        return isqrt(sigma, iterations, "auto" if algorithm == "gram" else algorithm)
    if sqrt in ("taylor", "pade"):
        return polynomial_sqrt(sigma, sqrt)
    if sqrt == "svd_pade":
        return svd_pade_sqrt(sigma)
    return eigh_sqrt(sigma)


_TRI_CACHE: dict = {}


def triangle_indices(d: int, order: str, device: torch.device) -> torch.Tensor:
    """Flat indices into a d×d matrix. ``row``: upper triangle row by row, (0,0),(0,1),…,(0,d−1),(1,1),…
    (iSQRT-COV). ``col``: upper triangle column by column, (0,0),(0,1),(1,1),(0,2),… (3G-Net)."""
    key = (d, order, device)
    if key not in _TRI_CACHE:
        r, c = VEC_ORDERS[order](d, d, device=device)
        _TRI_CACHE[key] = r * d + c
    return _TRI_CACHE[key]


def triu_vec(c: torch.Tensor, order: str = "row") -> torch.Tensor:
    """(B, d, d) symmetric -> (B, d(d+1)/2)."""
    d = c.shape[-1]
    return c.reshape(c.shape[0], d * d).index_select(1, triangle_indices(d, order, c.device))


def reduction_block(in_channels: int, dim: int, activation: str, conv_init: str = "kaiming") -> nn.Sequential:
    """1x1 conv (no bias) + BN(1, 0) + ReLU or ReLU6. ``conv_init``: ``kaiming`` (fan_out, as the
    ResNet and MobileNetV2 references initialise it) or ``default`` (PyTorch's, which the GCP study's
    ShuffleNetV2 keeps)."""
    conv = nn.Conv2d(in_channels, dim, 1, bias=False)
    REDUCE_INITS[conv_init](conv.weight)
    return nn.Sequential(conv, nn.BatchNorm2d(dim), ACTIVATIONS[activation](inplace=True))


# head.activation and head.reduce_init after `auto` is resolved (their choices: the head schemas)
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}
REDUCE_INITS = {"kaiming": lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
                "default": lambda w: w}  # nn.Conv2d's own initialisation


class CovarianceSqrt(nn.Module):
    """maps (B, d, h, w) -> vector (B, d(d+1)/2): covariance (+ jitter·I) -> matrix root -> triangle.
    Runs in float32 (or float64) with autocast disabled."""

    def __init__(self, iterations: int = 5, sqrt: str = "newton_schulz", vec_order: str = "row", jitter: float = 0.0,
                 algorithm: str = "auto"):
        super().__init__()  # choices and ranges: this signature's, checked at start-up
        triangle_indices(2, vec_order, torch.device("cpu"))  # validates the order now
        self.iterations, self.sqrt, self.vec_order, self.jitter = iterations, sqrt, vec_order, jitter
        self.algorithm = algorithm

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(maps.device.type, enabled=False):
            x = full_precision(maps)
            feats = x.reshape(x.shape[0], x.shape[1], -1)
            algorithm = resolve_algorithm(self.algorithm, feats.shape[1], feats.shape[2], x.is_cuda)
            if self.sqrt == "newton_schulz" and algorithm == "gram":
                return triu_vec(gram_isqrt(feats, self.iterations, self.jitter), self.vec_order)
            sigma = covariance(x)
            if self.jitter:
                sigma = sigma + self.jitter * torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device)
            return triu_vec(matrix_sqrt(sigma, self.sqrt, self.iterations, algorithm), self.vec_order)


class IsqrtCovHead(PoolingHead):
    """GCP head ``gcp`` (d = 256) / ``gcp128`` (d = 128): reduction -> iSQRT-COV -> (B, d(d+1)/2)."""

    preferred_last_stride = 1  # the papers drop ResNet's last downsampling: 14x14 maps, M = 196
    min_positions = 2  # a covariance of one position is zero

    def __init__(self, in_channels: int, dim: Count = 256, iterations: Count = 5, activation: Activation = "relu",
                 sqrt: Sqrt = "newton_schulz", algorithm: Algorithm = "auto", vec_order: VecOrder = "row",
                 dropout: DropRate = 0.0, mlp: MLPWidths = (), mlp_norm: MLPNorm = False, bottleneck: Bottleneck = None,
                 reduce_init: ReduceInit = "kaiming"):
        super().__init__()
        self.reduce = reduction_block(in_channels, dim, activation, reduce_init) if dim else nn.Identity()
        d = dim or in_channels
        self.pool = nn.Sequential(self.reduce, CovarianceSqrt(iterations, sqrt, vec_order, algorithm=algorithm))
        self._finish(d * (d + 1) // 2, dropout, mlp, mlp_norm, bottleneck)
