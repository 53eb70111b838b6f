"""iSQRT-COV computed through the M×M Gram matrix: exact, and cheap wherever a map has fewer positions M
than channels d (7×7 = 49 or 14×14 = 196 positions against d = 256).

With X = X_c / √M the centred, scaled map (B, d, M), Σ = X Xᵀ + εI (ε: the 3G head's jitter, else 0),
t = tr Σ = tr G + dε with G = XᵀX (B, M, M), and A = Σ / t, every Newton–Schulz iterate is a polynomial
in X Xᵀ and so has the form s·I + X P Xᵀ with a scalar s and an M×M matrix P: the push-through identity
X f(XᵀX) = f(XXᵀ) X turns (aI + XPXᵀ)(bI + XQXᵀ) into abI + X(aQ + bP + PGQ)Xᵀ. The iteration therefore
runs on M×M matrices and only the last step, C = √t (s_N I + X P_N Xᵀ), touches d×d.

Two inner algorithms (same values; ``gram_isqrt``'s ``inner``):

* ``spectral`` (ε = 0, the iSQRT-COV head): P_N = R_N(G/t)/t with R_N(a) = f_N(a)/a, the scalar
  Newton–Schulz map divided by its argument (Y_k = A·R_k(A), Z_k = S_k(A), R₀ = S₀ = 1,
  T_k = ½(3 − a S_k R_k), R_{k+1} = R_k T_k, S_{k+1} = T_k S_k). One M×M eigendecomposition of G, the
  recurrence on its eigenvalues, and a hand-written backward (Daleckii–Krein on G, whose divided
  differences run through the same recurrence, as ``SpectralNewtonSchulz`` does on Σ):
  C = X W Xᵀ with W = V diag(R_N(μ/t)/√t) Vᵀ, G = V diag(μ) Vᵀ.
* ``matmul`` (any ε, and CUDA): the pairs (s, P) above, five M×M products a step, autograd backward.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from lgm_gcp.models.heads.eigen import safe_eigh


def _root_ratio(a: torch.Tensor, iterations: int, with_dd: bool):
    """R_N(a) = f_N(a)/a at the eigenvalue ratios a (B, M) and, if asked, its divided differences
    DD_ij = (R_N(a_i) − R_N(a_j))/(a_i − a_j) (B, M, M), R_N'(a_i) on the diagonal, carried through the
    recurrence by D[uv] = D[u]·v(a_j) + u(a_i)·D[v] (nothing divides by a_i − a_j). The (B, M, M)
    updates are in place: this loop is memory-bound."""
    r = s = torch.ones_like(a)
    dr = ds = dt2 = None
    ai = a.unsqueeze(-1)
    for k in range(iterations):
        p = s * r
        t = 0.5 * (3.0 - a * p)
        if with_dd:
            if k == 0:  # R = S = 1: D[aSR] = 1, so DT = −½ and DR₁ = DS₁ = −½ everywhere
                dr = torch.full(a.shape + a.shape[-1:], -0.5, dtype=a.dtype, device=a.device)
                ds, dt2 = dr.clone(), torch.empty_like(dr)
            else:  # dt2 = −2 DT = D[a·SR] = SR(a_j) + a_i (DS·R(a_j) + S(a_i)·DR)
                torch.mul(ds, r.unsqueeze(-2), out=dt2).addcmul_(s.unsqueeze(-1), dr).mul_(ai).add_(p.unsqueeze(-2))
                if k < iterations - 1:  # the last step's DS is never read
                    ds.mul_(t.unsqueeze(-1)).addcmul_(dt2, s.unsqueeze(-2), value=-0.5)
                dr.mul_(t.unsqueeze(-2)).addcmul_(r.unsqueeze(-1), dt2, value=-0.5)
        r, s = r * t, t * s
    return r, dr


class GramSpectral(torch.autograd.Function):
    """x (B, d, M), centred and divided by √M -> C = iSQRT(x xᵀ) (B, d, d), through G = xᵀx (B, M, M).

    With G = V diag(μ) Vᵀ, Q = xV (B, d, M) and w = R_N(μ/t)/√t: C = Q diag(w) Qᵀ. Backward, with
    S = ∂L/∂C + ∂L/∂Cᵀ: ∂L/∂x = (SQ diag(w) + Q K) Vᵀ, K = Vᵀ(2 ∂L/∂G)V = (DD ∘ QᵀSQ)/t^{3/2} + 2(∂L/∂t)·I,
    where ∂L/∂t = Σ_i ½(QᵀSQ)_ii ∂w_i/∂t (t = tr G at fixed μ): four products with d, none with d×d
    operands on both sides but the first."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, iterations: int) -> torch.Tensor:
        mu, v = safe_eigh(x.mT @ x)
        t = mu.sum(-1, keepdim=True)  # tr G = tr Σ
        a = mu / t
        r, _ = _root_ratio(a, iterations, with_dd=False)
        w = r / t.sqrt()
        q = x @ v
        ctx.save_for_backward(q, v, a, t, w)
        ctx.iterations = iterations
        return (q * w.unsqueeze(-2)) @ q.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        q, v, a, t, w = ctx.saved_tensors
        r, dd = _root_ratio(a, ctx.iterations, with_dd=True)
        sq = (grad + grad.mT) @ q  # (B, d, M)
        qsq = q.mT @ sq  # (B, M, M)
        t32 = t * t.sqrt()  # t^{3/2}, (B, 1)
        # ∂w_i/∂μ_j at fixed t: DD_ij / t^{3/2}; ∂w_i/∂t at fixed μ: −(a_i R'_i + ½ R_i) / t^{3/2}
        d_t = torch.linalg.vecdot(qsq.diagonal(dim1=-2, dim2=-1), a * dd.diagonal(dim1=-2, dim2=-1) + 0.5 * r)
        k = dd.mul_(qsq).div_(t32.unsqueeze(-1))
        k.diagonal(dim1=-2, dim2=-1).sub_((d_t.unsqueeze(-1) / t32))
        return torch.baddbmm(sq * w.unsqueeze(-2), q, k) @ v.mT, None


def gram_pairs(x: torch.Tensor, iterations: int, jitter: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The iteration on (scalar, M×M) pairs: x (B, d, M) -> (c (B, 1, 1), P (B, M, M)) with
    iSQRT(x xᵀ + jitter·I) = c·I + x P xᵀ. Autograd differentiates it."""
    g = x.mT @ x
    t = (g.diagonal(dim1=-2, dim2=-1).sum(-1) + jitter * x.shape[1]).view(-1, 1, 1)
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    y_s, y_m = jitter / t, eye / t  # Y₀ = A = (Σ + εI)/t
    z_s, z_m = torch.ones_like(t), None  # Z₀ = I
    for k in range(iterations):
        gy = g @ y_m
        zy_m = z_s * y_m if z_m is None else z_s * y_m + y_s * z_m + z_m @ gy
        t_s, t_m = 1.5 - 0.5 * z_s * y_s, -0.5 * zy_m  # T = ½(3I − ZY)
        if k < iterations - 1:  # Z' = TZ (the last Z is unused)
            z_s, z_m = (t_s * z_s, z_s * t_m if z_m is None else t_s * z_m + z_s * t_m + t_m @ (g @ z_m))
        y_s, y_m = y_s * t_s, y_s * t_m + t_s * y_m + gy.mT @ t_m  # Y' = YT (y_m G = (G y_m)ᵀ)
    root = t.sqrt()
    return root * y_s, root * y_m


def gram_isqrt(feats: torch.Tensor, iterations: int = 5, jitter: float = 0.0, inner: str = "auto") -> torch.Tensor:
    """iSQRT-COV of (B, d, M) feature maps: the matrix function of Σ = X_c X_cᵀ/M + jitter·I that
    ``covariance`` + ``isqrt`` compute, evaluated on M×M matrices -> (B, d, d).
    ``inner``: ``spectral`` or ``matmul``; ``auto`` takes spectral on the CPU without jitter, matmul
    otherwise. The spectral form has no jitter term, so a jittered call always takes matmul."""
    if inner == "auto":
        inner = "spectral" if not feats.is_cuda and not jitter else "matmul"
    x = (feats - feats.mean(dim=2, keepdim=True)) / feats.shape[-1] ** 0.5
    if inner == "spectral" and not jitter:
        try:
            return GramSpectral.apply(x, iterations)
        except torch.linalg.LinAlgError:  # eigh did not converge: the iteration needs no decomposition
            pass
    c, p = gram_pairs(x, iterations, jitter)
    out = (x @ p) @ x.mT
    return out + c * torch.eye(out.shape[-1], dtype=out.dtype, device=out.device) if jitter else out
