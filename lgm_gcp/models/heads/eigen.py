"""A symmetric eigendecomposition that does not return NaN silently, nor stall under CPU contention."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_cpu_thread(tensor: torch.Tensor):
    """Run LAPACK's eigh on one thread. MKL's multithreaded syevd barely uses a second core on these
    sizes (M = 49: 0.94 ms on one thread, 0.97 on two; M = 196: 12.4 against 11.5 ms), but when another
    process competes for the cores its threads' barriers stall: a training step's (128, 49, 49) eigh
    took 1 to 2 s instead of 20 ms beside a second run on this 2-core machine (24 to 70x). Setting
    the thread count costs well under a microsecond."""
    threads = torch.get_num_threads()
    if tensor.is_cuda or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def safe_eigh(sym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` of (B, n, n) symmetric matrices -> eigenvalues (B, n), eigenvectors (B, n, n).

    MKL's multithreaded float32 ``syevd`` has returned NaN eigenvalues and vectors, with no error, for
    a rank-3 256×256 covariance of a trained small CNN (2×2 maps, 74 dead channels; the same matrix
    decomposes with one thread, or in float64): one such sample turned a whole training run's loss
    into NaN. Samples whose result is not finite are decomposed again in float64; if that fails too,
    ``torch.linalg.LinAlgError`` is raised, as for a decomposition that does not converge."""
    with one_cpu_thread(sym):
        lam, u = torch.linalg.eigh(sym)
    bad = ~torch.isfinite(lam.sum(-1) + u.sum((-2, -1)))  # one pass: a NaN or inf anywhere survives the sums
    if bad.any():
        with one_cpu_thread(sym):
            lam64, u64 = torch.linalg.eigh(sym[bad].double())
        if not (torch.isfinite(lam64).all() and torch.isfinite(u64).all()):
            raise torch.linalg.LinAlgError("eigh returned non-finite values in float64 too")
        lam, u = lam.clone(), u.clone()
        lam[bad], u[bad] = lam64.to(lam.dtype), u64.to(u.dtype)
    return lam, u
