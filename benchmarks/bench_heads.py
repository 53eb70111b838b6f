"""Covariance-pooling meta-layer speed: forward + backward of covariance -> square root -> vector.

Compares, in one process on the same inputs:
  ours       lgm_gcp's CovarianceSqrt with algorithm=auto (gram where M < d; else spectral on CPU, matmul on CUDA)
  gram       the M×M Gram-matrix evaluation (spectral inner solver on CPU, matmul on CUDA)
  gram mm    the same with the (scalar, M×M) product iteration and autograd (what 3G's jitter takes)
  matmul     lgm_gcp's batched-product iteration (mean-subtraction centring, fused steps, autograd)
  spectral   lgm_gcp's eigenbasis evaluation of the same function (Daleckii-Krein backward)
  reference  the widely used iSQRT-COV approach restated from the spec (pooling.md 1.3-1.8) in
             tests/references.py: an M×M centring matrix, identities repeated per batch, a hand-written backward
  plain      a straightforward autograd Newton-Schulz (centring matrix-free, no fusion)
  eigh       torch.linalg.eigh square root with autograd
  eigh only  torch.linalg.eigh of the covariances alone, no backward: the floor of any eigenbasis method
and prints each as a ratio of the reference time (lower is better; goals, issue 23: ours <= 0.05 at d 256,
M 49; <= 0.2 at d 256, M 196; <= 0.15 at d 128, M 49).

    python benchmarks/bench_heads.py [--device cuda] [--batches 8 32 128] [--dims 128 256] [--threads 2 1] [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from _timing import ratio_quartiles, round_times

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lgm_gcp.markdown import markdown_header, markdown_row
from lgm_gcp.models.heads.covariance import CovarianceSqrt, covariance, eigh_sqrt, triu_vec
from lgm_gcp.models.heads.gram import gram_isqrt

from references import fast_mpn_cov as reference  # noqa: E402  (the restatement the parity tests check)


def plain(x, n=5):
    sigma = covariance(x)
    d = sigma.shape[-1]
    eye = torch.eye(d, device=x.device, dtype=x.dtype).expand_as(sigma)
    trace = sigma.diagonal(dim1=1, dim2=2).sum(-1).view(-1, 1, 1)
    y, z = sigma / trace, eye
    for _ in range(n):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    return triu_vec(y * trace.sqrt())


def gram_mm(x):
    return triu_vec(gram_isqrt(x.flatten(2), inner="matmul"))


def eigh(x):
    return triu_vec(eigh_sqrt(covariance(x)))


def eigh_only(x):
    """Not a pooling: the eigendecomposition alone (fwd_bwd_of skips the backward of a no-grad output)."""
    with torch.no_grad():
        return torch.linalg.eigh(covariance(x))[0]


def fwd_bwd_of(fn, x):
    def fwd_bwd():
        x.grad = None
        out = fn(x)
        if out.requires_grad:
            out.backward(torch.ones_like(out))

    return fwd_bwd


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--positions", type=int, nargs="+", default=[49, 196])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--number", type=int, default=3, help="runs per case per round")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    args = parser.parse_args()
    ours = CovarianceSqrt(iterations=5)
    matmul, spectral = CovarianceSqrt(algorithm="matmul"), CovarianceSqrt(algorithm="spectral")
    gram = CovarianceSqrt(algorithm="gram")
    x0 = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    for impl in (ours, matmul, spectral, gram, gram_mm):  # the same function before timing it
        assert torch.allclose(impl(x0), reference(x0), atol=1e-6)
    print(f"device {args.device}, float32 fwd+bwd, medians over {args.rounds} interleaved rounds of {args.number} "
          "runs; "
          "ratios to the reference's time (median of per-round ratios; ours: interquartile range in brackets; "
          "goals, issue 23: ours <= 0.05 / 0.2 at d 256, M 49 / 196, <= 0.15 at d 128, M 49)")
    cases = {"ours": ours, "gram": gram, "gram mm": gram_mm, "matmul": matmul, "spectral": spectral, "plain": plain,
             "eigh": eigh, "eigh only": eigh_only}
    print(markdown_header(["threads", "B", "d", "M", "reference ms", *cases]))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for b in args.batches:
            for d in args.dims:
                for m in args.positions:
                    side = int(m**0.5)
                    x = torch.relu(torch.randn(b, d, side, side, device=args.device)).requires_grad_()
                    fns = {name: fwd_bwd_of(fn, x) for name, fn in {"reference": reference, **cases}.items()}
                    times = round_times(fns, args.rounds, args.number)
                    cells = []
                    for name in cases:
                        low, mid, high = ratio_quartiles(times, name, "reference")
                        cells.append(f"{mid:.2f} ({low:.2f}–{high:.2f})" if name == "ours" else f"{mid:.2f}")
                    ref_ms = 1000 * statistics.median(times["reference"])
                    print(markdown_row([threads, b, d, m, f"{ref_ms:.1f}", *cells]), flush=True)


if __name__ == "__main__":
    main()
