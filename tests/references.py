"""The four reference implementations' computations, restated from their published formulas (spec
notes: pooling.md 1.3-1.8 and 2.3, losses.md 1.3-1.4 and 2.1) in the references' own way of computing
them, for float64 parity tests (tests/test_parity.py) and the speed baselines in benchmarks/.
Nothing here is library code; each function is a plain restatement, not a copy of the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------ iSQRT-COV (fast-MPN-COV, pooling.md 1.3-1.8)


class RefCovpool(torch.autograd.Function):
    """Σ = X Ī Xᵀ with the M×M centring matrix Ī = (1/M)(I − 1/M 𝟙𝟙ᵀ), repeated per batch; backward
    (G + Gᵀ) X Ī. The reference builds Ī in float32 and then casts it, so its float64 Σ carries float32
    rounding wherever 1/M is not a float32 number (M = 9, 49, 196: relative 1e-8); this restatement builds
    Ī in the input's dtype, so that float64 tests compare the formulation."""

    @staticmethod
    def forward(ctx, x):
        b, d, h, w = x.shape
        m = h * w
        x = x.reshape(b, d, m)
        ones, eye = torch.ones(m, m, device=x.device, dtype=x.dtype), torch.eye(m, device=x.device, dtype=x.dtype)
        i_hat = ((-1.0 / m / m) * ones + (1.0 / m) * eye).view(1, m, m).repeat(b, 1, 1)
        ctx.save_for_backward(x, i_hat)
        ctx.shape = (b, d, h, w)
        return x.bmm(i_hat).bmm(x.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, i_hat = ctx.saved_tensors
        return ((g + g.transpose(1, 2)).bmm(x).bmm(i_hat)).reshape(ctx.shape)


class RefSqrtm(torch.autograd.Function):
    """Trace pre-normalisation, N coupled Newton–Schulz steps (the last computes Y only), ×√trace;
    the hand-written backward of pooling.md 1.7 through the stored iterates."""

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
    """The upper triangle, row by row, through an index rebuilt on every call."""

    @staticmethod
    def forward(ctx, c):
        b, d, _ = c.shape
        index = torch.ones(d, d).triu().reshape(d * d).nonzero().squeeze(1).to(c.device)
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


def fast_mpn_cov(maps: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """fast-MPN-COV's meta-layer: (B, d, h, w) -> (B, d(d+1)/2)."""
    return RefTriuvec.apply(RefSqrtm.apply(RefCovpool.apply(maps), iterations))


# ------------------------------------------------------------------ 3G-Net (pooling.md 2.3)


def _conv_bn(x, params, prefix, bn=True):
    """A 1x1 conv without bias, then a training-mode BatchNorm, from a module's named parameters."""
    x = F.conv2d(x, params[f"{prefix}.0.weight"])
    if bn:
        x = F.batch_norm(x, None, None, params[f"{prefix}.1.weight"], params[f"{prefix}.1.bias"], training=True)
    return x


def three_g_net(maps: torch.Tensor, params: dict, blocks: int = 3, iterations: int = 5) -> torch.Tensor:
    """3G-Net's head as its code computes it, per sample in a Python loop as the reference does:
    x₀ = ReLU(BN(W maps)); x_k = x_{k−1} ⊙ sigmoid(u + c·u) with u from block k; Σ = X̂ Ī X̂ᵀ + 1e−7·I;
    trace-normalised coupled Newton–Schulz with N = 5 (autograd backward), ×√trace; the lower triangle
    row by row. ``params``: the lgm-gcp ThreeGHead's named parameters (the reference's AtMp1-3 layers
    one to one)."""
    x0 = F.relu(_conv_bn(maps, params, "reduce"))
    x = x0
    for k in range(blocks):
        p = f"blocks.{k}"
        interaction = _conv_bn(x, params, f"{p}.p1") * _conv_bn(x, params, f"{p}.p2")
        h1 = F.relu(interaction + _conv_bn(x0, params, f"{p}.inject"))
        h2 = F.relu(_conv_bn(h1, params, f"{p}.h1")) * F.relu(_conv_bn(h1, params, f"{p}.h2"))
        u = _conv_bn(F.relu(_conv_bn(h2, params, f"{p}.squeeze")), params, f"{p}.score", bn=False)
        x = x * torch.sigmoid(u + _conv_bn(u, params, f"{p}.scale", bn=False))
    b, d, h, w = x.shape
    m = h * w
    i_bar = (torch.eye(m, dtype=x.dtype) - torch.full((m, m), 1.0 / m, dtype=x.dtype)) / m
    out = []
    for i in range(b):
        xi = x[i].reshape(d, m)
        sigma = xi @ i_bar @ xi.T + 1e-7 * torch.eye(d, dtype=x.dtype)
        trace = torch.trace(sigma)
        y, z, eye = sigma / trace, torch.eye(d, dtype=x.dtype), torch.eye(d, dtype=x.dtype)
        for _ in range(iterations - 1):
            t = 0.5 * (3.0 * eye - z @ y)
            y, z = y @ t, t @ z
        root = 0.5 * y @ (3.0 * eye - z @ y) * trace.sqrt()
        rows, cols = torch.tril_indices(d, d)
        out.append(root[rows, cols])
    return torch.stack(out)


# ------------------------------------------------------------------ L-GM, Caffe's ClassDistance (losses.md 1.3-1.4)


def caffe_class_distance(x, mu, sigma, y, alpha, lam):
    """Forward and hand-written backward of Caffe's ClassDistance (L2, isotropic) + SoftmaxWithLoss.

    x (M, D), mu (C, D), sigma (C,) raw; returns (CE, logits without margin, ∂/∂x, ∂/∂μ, ∂/∂σ) where the
    gradients are those the layer writes, the likelihood's λ term included (it exists only there):
      s_ik = Σ_d (x_id − μ_kd)²,  z_ik = −½ s_ik / (max(σ_k, 0) + 1e-4),  z_iy ← (1 + α) z_iy
      g = (softmax(z) − onehot)/M,  m = 1 + α·onehot
      ∂x_i = Σ_k g_ik m_ik (μ_k − x_i)/(σ_k + 1e-4) + (λ/M)(x_i − μ_yi)
      ∂μ_k = Σ_i g_ik m_ik (x_i − μ_k)/(σ_k + 1e-4) + (λ/M) Σ_{i: yi=k} (μ_k − x_i)
      ∂σ_k = Σ_i g_ik m_ik s_ik / (2 (σ_k + 1e-4) σ_k)
    """
    m_count, c = x.shape[0], mu.shape[0]
    s = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    denom = sigma.clamp_min(0.0) + 1e-4
    z = -0.5 * s / denom
    onehot = F.one_hot(y, c).to(x.dtype)
    mult = 1.0 + alpha * onehot
    z_margin = z * mult
    ce = -(F.log_softmax(z_margin, dim=1) * onehot).sum() / m_count
    g = (F.softmax(z_margin, dim=1) - onehot) / m_count
    gm = g * mult / denom
    grad_x = (gm[:, :, None] * (mu[None] - x[:, None])).sum(1) + lam / m_count * (x - mu[y])
    pull = onehot.sum(0)[:, None] * mu - onehot.T @ x  # Σ_{i: yi=k} (μ_k − x_i)
    grad_mu = (gm[:, :, None] * (x[:, None] - mu[None])).sum(0) + lam / m_count * pull
    grad_sigma = (g * mult * s).sum(0) / (2 * denom * sigma)
    return ce, z, grad_x, grad_mu, grad_sigma


# ------------------------------------------------------------------ large-margin softmax (losses.md 2.1)


def large_margin_in_softmax(z: torch.Tensor, y: torch.Tensor, reg_lambda: float = 0.3,
                            deg_logit: float | None = None) -> torch.Tensor:
    """CE + λ·mean_i ½ Σ_{j≠y}(q_j − 1/(C−1)) log q_j, the non-target softmax q built as the reference
    builds it: 10⁶ subtracted from the target logit, a softmax over all C columns, the target column
    then multiplied by 0."""
    c = z.shape[1]
    onehot = F.one_hot(y, c).to(z.dtype)
    if deg_logit is not None:
        z = z - deg_logit * onehot
    ce = F.cross_entropy(z, y)
    shifted = z - 1e6 * onehot
    q = F.softmax(shifted, dim=1) * (1 - onehot)
    log_q = F.log_softmax(shifted, dim=1) * (1 - onehot)
    r = 0.5 * ((q - 1.0 / (c - 1)) * log_q * (1 - onehot)).sum(1)
    return ce + reg_lambda * r.mean()
