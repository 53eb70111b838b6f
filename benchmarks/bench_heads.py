"""Covariance-pooling meta-layer speed: forward + backward of covariance -> square root -> vector.

Compares, in one process on the same inputs:
  ours       lgm_gcp's CovarianceSqrt with algorithm=auto (spectral on CPU, matmul on CUDA)
  matmul     lgm_gcp's batched-product iteration (mean-subtraction centring, fused steps, autograd)
  spectral   lgm_gcp's eigenbasis evaluation of the same function (Daleckii-Krein backward)
  reference  the widely used iSQRT-COV approach restated from the spec (pooling.md 1.3-1.8): an M×M
             centring matrix, identities repeated per batch, a hand-written backward
  plain      a straightforward autograd Newton-Schulz (centring matrix-free, no fusion)
  eigh       torch.linalg.eigh square root with autograd
and prints each as a ratio of the reference time (lower is better; goal: ours <= 0.4).

    python benchmarks/bench_heads.py [--device cuda] [--batches 8 32 128] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from _timing import median_seconds

from lgm_gcp.models.heads.covariance import CovarianceSqrt, covariance, eigh_sqrt, triu_vec


class RefCovpool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        b, d, h, w = x.shape
        m = h * w
        x = x.reshape(b, d, m)
        i_hat = (-1.0 / m / m) * torch.ones(m, m, device=x.device) + (1.0 / m) * torch.eye(m, device=x.device)
        i_hat = i_hat.view(1, m, m).repeat(b, 1, 1).type(x.dtype)
        ctx.save_for_backward(x, i_hat)
        ctx.shape = (b, d, h, w)
        return x.bmm(i_hat).bmm(x.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, i_hat = ctx.saved_tensors
        return ((g + g.transpose(1, 2)).bmm(x).bmm(i_hat)).reshape(ctx.shape)


class RefSqrtm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, n):
        b, d, _ = a.shape
        eye = torch.eye(d, device=a.device, dtype=a.dtype).view(1, d, d).repeat(b, 1, 1)
        s = (a * eye).sum(dim=(1, 2)).view(b, 1, 1)
        an = a / s
        ys = a.new_zeros(b, n, d, d)
        zs = eye.view(b, 1, d, d).repeat(1, n, 1, 1)
        t = 0.5 * (3.0 * eye - an)
        ys[:, 0], zs[:, 0] = an.bmm(t), t
        for k in range(1, n - 1):
            t = 0.5 * (3.0 * eye - zs[:, k - 1].bmm(ys[:, k - 1]))
            ys[:, k], zs[:, k] = ys[:, k - 1].bmm(t), t.bmm(zs[:, k - 1])
        yn = 0.5 * ys[:, n - 2].bmm(3.0 * eye - zs[:, n - 2].bmm(ys[:, n - 2]))
        ctx.save_for_backward(an, ys, zs, yn, s, eye)
        ctx.n = n
        return yn * s.sqrt()

    @staticmethod
    def backward(ctx, g):
        an, ys, zs, yn, s, eye = ctx.saved_tensors
        n = ctx.n
        g_n = g * s.sqrt()
        a_post = (g * yn).sum(dim=(1, 2), keepdim=True) / (2 * s.sqrt())
        y, z = ys[:, n - 2], zs[:, n - 2]
        yz = y.bmm(z)
        g_y = 0.5 * (g_n.bmm(3.0 * eye - yz) - z.bmm(y).bmm(g_n))
        g_z = -0.5 * y.bmm(g_n).bmm(y)
        for k in range(n - 3, -1, -1):
            y, z = ys[:, k], zs[:, k]
            yz = y.bmm(z)
            g_y, g_z = (0.5 * (g_y.bmm(3.0 * eye - yz) - z.bmm(g_z).bmm(z) - z.bmm(y).bmm(g_y)),
                        0.5 * ((3.0 * eye - yz).bmm(g_z) - y.bmm(g_y).bmm(y) - g_z.bmm(z).bmm(y)))
        g_a = 0.5 * (g_y.bmm(3.0 * eye - an) - an.bmm(g_y)) - 0.5 * g_z
        d_sigma = g_a / s + (a_post - (g_a * an).sum(dim=(1, 2), keepdim=True) / s) * eye
        return d_sigma, None


class RefTriuvec(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c):
        b, d, _ = c.shape
        index = torch.ones(d, d).triu().reshape(d * d).nonzero().squeeze(1).to(c.device)  # rebuilt per call
        ctx.save_for_backward(index)
        ctx.shape = c.shape
        return c.reshape(b, d * d)[:, index]

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        b, d, _ = ctx.shape
        out = g.new_zeros(b, d * d)
        out[:, index] = g
        return out.view(b, d, d)


def reference(x, n=5):
    return RefTriuvec.apply(RefSqrtm.apply(RefCovpool.apply(x), n))


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


def eigh(x):
    return triu_vec(eigh_sqrt(covariance(x)))


def timed(fn, x, repeats):
    def fwd_bwd():
        x.grad = None
        out = fn(x)
        out.backward(torch.ones_like(out))

    return median_seconds(fwd_bwd, repeats, x.is_cuda)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--positions", type=int, nargs="+", default=[49, 196])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ours = CovarianceSqrt(iterations=5)
    matmul, spectral = CovarianceSqrt(algorithm="matmul"), CovarianceSqrt(algorithm="spectral")
    x0 = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    for impl in (ours, matmul, spectral):  # the same function before timing it
        assert torch.allclose(impl(x0), reference(x0), atol=1e-6)
    print(f"device {args.device}, threads {torch.get_num_threads()}, fwd+bwd median of {args.repeats}, float32")
    names = ("ours", "matmul", "spectral", "plain", "eigh")
    print(f"{'B':>4} {'d':>4} {'M':>4} {'reference ms':>13} " + " ".join(f"{n:>8}" for n in names)
          + "   (ratios to reference)")
    for b in args.batches:
        for d in args.dims:
            for m in args.positions:
                side = int(m**0.5)
                x = torch.relu(torch.randn(b, d, side, side, device=args.device)).requires_grad_()
                ref = timed(reference, x, args.repeats)
                row = [timed(f, x, args.repeats) / ref for f in (ours, matmul, spectral, plain, eigh)]
                print(f"{b:>4} {d:>4} {m:>4} {1000 * ref:>13.1f} " + " ".join(f"{r:>8.2f}" for r in row), flush=True)


if __name__ == "__main__":
    main()
