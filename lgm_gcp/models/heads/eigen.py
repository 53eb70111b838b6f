"""A symmetric eigendecomposition that does not return NaN silently."""

from __future__ import annotations

import torch


def safe_eigh(sym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` of (B, n, n) symmetric matrices -> eigenvalues (B, n), eigenvectors (B, n, n).

    MKL's multithreaded float32 ``syevd`` has returned NaN eigenvalues and vectors, with no error, for
    a rank-3 256×256 covariance of a trained small CNN (2×2 maps, 74 dead channels; the same matrix
    decomposes with one thread, or in float64): one such sample turned a whole training run's loss
    into NaN. Samples whose result is not finite are decomposed again in float64; if that fails too,
    ``torch.linalg.LinAlgError`` is raised, as for a decomposition that does not converge."""
    lam, u = torch.linalg.eigh(sym)
    bad = ~torch.isfinite(lam.sum(-1) + u.sum((-2, -1)))  # one pass: a NaN or inf anywhere survives the sums
    if bad.any():
        lam64, u64 = torch.linalg.eigh(sym[bad].double())
        if not (torch.isfinite(lam64).all() and torch.isfinite(u64).all()):
            raise torch.linalg.LinAlgError("eigh returned non-finite values in float64 too")
        lam, u = lam.clone(), u.clone()
        lam[bad], u[bad] = lam64.to(lam.dtype), u64.to(u.dtype)
    return lam, u
