"""Matrix square roots after Newton–Schulz, the GCP head's ``head.sqrt`` backends besides ``newton_schulz``.

Σ (B, d, d) symmetric positive semi-definite -> an approximation of √Σ (B, d, d).

* ``taylor`` / ``pade`` (Song, Sebe, Wang, "Fast Differentiable Matrix Square Root", ICLR 2022; the
  reference is KingJamesSong/FastDifferentiableMatSqrt, ``torch_utils.py``, MTP and MPA_Lya):
  A = Σ / ‖Σ‖_F, Z = I − A, and √A ≈ Σ_{k=0}^{10} a_k Z^k (the degree-10 Taylor polynomial of √(1 − z)) or
  ≈ Q(Z)⁻¹P(Z) (its [5/5] Padé approximant, one batched solve); the result times √‖Σ‖_F.
  Backward (both): the gradient of the exact root, which solves the Lyapunov equation √Σ X + X √Σ = G,
  by the coupled sign iteration on [[B, C], [0, −B]] started from B₀ = √A, C₀ = G / √‖Σ‖_F:
  B ← ½B(3I − B²), C ← ½(C(3I − B²) − B²C + BCB), and ∂L/∂Σ = ½C_K (K = 8). Nothing is stored but √A,
  and no gradient flows through ‖Σ‖_F (as in the reference).
  Departure: the reference's Taylor helper accumulates its sum *into the identity tensor it also saves for
  the backward*, so its "MTP-Lya" backward iterates with 3√A − B² instead of 3I − B²; the paper's method
  (and this code) uses I. No released number depends on the Taylor path.
* ``svd_pade`` (Song, Sebe, Wang, "Why Approximate Matrix Square Root Outperforms Accurate SVD", ICCV 2021;
  KingJamesSong/DifferentiableSVD, ``src/representation/SVD_Pade.py``): forward, the exact root
  U diag(√λ) Uᵀ in float64 with eigenvalues clamped at float64's eps. Backward, the eigendecomposition's
  gradient U (Kᵀ ∘ Uᵀ∂U + diag ∂λ) Uᵀ with ∂U = (G + Gᵀ) U Λ^½, ∂λ = ½ diag(Λ^−½ UᵀGU), where the divided
  differences K_ij = 1/(λ_i − λ_j) are evaluated as the reference evaluates them: with r = λ_min/λ_max ≤ 1
  of the pair, K_ij = ±R(r)/λ_max (the sign of λ_i − λ_j), R the [50/50] Padé approximant of the
  degree-100 geometric series Σ rᵏ (mpmath's, as the reference derives it). That series' Padé table is
  degenerate and mpmath's solution has a pole at r = 1: in float64 R(r) equals 1/(1 − r) to 1e-9 relative up
  to r = 1 − 1e-7, so K is the exact divided difference wherever eigenvalues differ, and the gradient the
  exact one (``gradcheck`` passes there). Equal eigenvalues, such as the eps-clamped zeros of a
  rank-deficient Σ, meet the pole; non-finite K entries become the largest (or smallest) finite one in the
  batch, as in the reference. The returned ∂L/∂Σ carries an antisymmetric part that the exact gradient of
  a symmetric argument lacks; the covariance's backward, (G + Gᵀ)X_c/M, removes it, so from the maps on
  the gradient is the exact one.

Padé and Taylor coefficients are computed once, by mpmath (torch's own dependency, through sympy), in the
precision the references use.
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

from lgm_gcp.models.heads.eigen import one_cpu_thread

LYAPUNOV_ITERATIONS = 8  # the reference's fixed count


@functools.lru_cache(maxsize=None)
def sqrt_coefficients() -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(taylor a_0..a_10, padé p_0..p_5, padé q_0..q_5) of √(1 − z), at mpmath's 32 digits."""
    import mpmath

    with mpmath.workdps(32):
        taylor = mpmath.taylor(lambda z: mpmath.sqrt(1 - z), 0, 10)
        p, q = mpmath.pade(taylor, 5, 5)
    return tuple(map(float, taylor)), tuple(map(float, p)), tuple(map(float, q))


@functools.lru_cache(maxsize=None)
def geometric_pade() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """[50/50] Padé (p, q) of Σ_{k=0}^{100} xᵏ at mpmath's 20 digits (DifferentiableSVD's derivation)."""
    import mpmath

    with mpmath.workdps(20):
        series = mpmath.taylor(lambda x: 1 / (1 - x), 0, 100)
        p, q = mpmath.pade(series, 50, 50)
    return tuple(map(float, p)), tuple(map(float, q))


def _polynomial_root(a: torch.Tensor, kind: str) -> torch.Tensor:
    """√A for ‖A‖_F = 1 by the Taylor polynomial or the Padé approximant in Z = I − A."""
    taylor, pade_p, pade_q = sqrt_coefficients()
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    z = eye - a
    if kind == "taylor":
        root, power = eye * taylor[0], z
        for k in range(1, len(taylor)):
            root = root + taylor[k] * power
            if k < len(taylor) - 1:
                power = power @ z
        return root
    num, den, power = eye * pade_p[0], eye * pade_q[0], z
    for k in range(1, len(pade_p)):
        num, den = num + pade_p[k] * power, den + pade_q[k] * power
        if k < len(pade_p) - 1:
            power = power @ z
    # on one CPU thread: MKL's two-thread batched LU fails on (128, 256, 256) float32 covariances of a training
    # step ("Parameter 6 was incorrect on entry to SLASWP", then torch's "Pivots given to lu_solve must all be
    # greater or equal to 1"); one thread solves the same batch
    with one_cpu_thread(den):
        return torch.linalg.solve(den, num)


def lyapunov_solve(root: torch.Tensor, grad: torch.Tensor, iterations: int = LYAPUNOV_ITERATIONS) -> torch.Tensor:
    """X with root·X + X·root ≈ grad, root (B, d, d) symmetric with eigenvalues in (0, √3), by the coupled
    sign iteration of [[root, grad], [0, −root]] (its sign is [[I, 2X], [0, −I]])."""
    eye3 = 3.0 * torch.eye(root.shape[-1], dtype=root.dtype, device=root.device)
    b, c = root, grad
    for _ in range(iterations):
        b2 = b @ b
        c = 0.5 * (c @ (eye3 - b2) - b2 @ c + b @ c @ b)
        b = 0.5 * b @ (eye3 - b2)
    return 0.5 * c


class PolynomialRootLyapunov(torch.autograd.Function):
    """Taylor or Padé forward, Lyapunov backward (module docstring)."""

    @staticmethod
    def forward(ctx, sigma: torch.Tensor, kind: str, iterations: int) -> torch.Tensor:
        norm = torch.linalg.matrix_norm(sigma).view(-1, 1, 1)
        root = _polynomial_root(sigma / norm, kind)
        ctx.save_for_backward(root, norm)
        ctx.iterations = iterations
        return root * norm.sqrt()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        root, norm = ctx.saved_tensors
        return lyapunov_solve(root, grad / norm.sqrt(), ctx.iterations), None, None


def polynomial_sqrt(sigma: torch.Tensor, kind: str, lyapunov_iterations: int = LYAPUNOV_ITERATIONS) -> torch.Tensor:
    """``taylor`` or ``pade`` root of (B, d, d) with the Lyapunov backward."""
    return PolynomialRootLyapunov.apply(sigma, kind, lyapunov_iterations)


def pade_divided_differences(lam: torch.Tensor) -> torch.Tensor:
    """DifferentiableSVD's evaluation of K_ij = 1/(λ_i − λ_j) (0 on the diagonal), lam (B, d)."""
    pade_p, pade_q = geometric_pade()
    li, lj = lam.unsqueeze(-1), lam.unsqueeze(-2)
    p = li / lj
    p = torch.where(p < 1.0, p, 1.0 / p)  # λ_min / λ_max of the pair
    scale = 1.0 / torch.where(li >= lj, li, -lj)
    num = torch.full_like(p, pade_p[0])
    den = torch.full_like(p, pade_q[0])
    power = torch.ones_like(p)
    for k in range(1, len(pade_p)):
        power = power * p
        num, den = num + pade_p[k] * power, den + pade_q[k] * power
    k = scale * num / den
    k.diagonal(dim1=-2, dim2=-1).zero_()
    finite = k[torch.isfinite(k)]
    high, low = (finite.max(), finite.min()) if finite.numel() else (0.0, 0.0)
    k = torch.where(k == float("inf"), high, k)
    k = torch.where(k == float("-inf"), low, k)
    return torch.where(torch.isnan(k), k.nan_to_num(nan=float("-inf")).max(), k)


class EighPadeRoot(torch.autograd.Function):
    """Exact root in float64; the Padé surrogate of its gradient (module docstring)."""

    @staticmethod
    def forward(ctx, sigma: torch.Tensor) -> torch.Tensor:
        with one_cpu_thread(sigma):  # eigen.py: MKL's threaded syevd stalls under contention
            lam, u = torch.linalg.eigh(sigma.double())
        lam = lam.clamp_min(torch.finfo(torch.float64).eps)
        ctx.save_for_backward(lam, u)
        return ((u * lam.sqrt().unsqueeze(-2)) @ u.mT).to(sigma.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        lam, u = ctx.saved_tensors
        g = grad.double()
        d_u = (g + g.mT) @ u * lam.sqrt().unsqueeze(-2)
        d_lam = 0.5 * (u.mT @ g @ u).diagonal(dim1=-2, dim2=-1) / lam.sqrt()
        inner = pade_divided_differences(lam).mT * (u.mT @ d_u)
        inner.diagonal(dim1=-2, dim2=-1).add_(d_lam)
        return (u @ inner @ u.mT).to(grad.dtype)


def svd_pade_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """Exact √Σ (float64 eigh) with DifferentiableSVD's Padé gradient."""
    return EighPadeRoot.apply(sigma)
