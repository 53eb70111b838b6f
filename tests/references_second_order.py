"""The second-order heads' reference implementations, restated in their own way of computing (tests/
test_second_order.py compares lgm-gcp's heads to these in float64 and float32). Each function names the
repository, commit, file and function it restates; a departure from the reference is marked DEPARTURE
with its reason. Nothing here is library code, and nothing is copied: each is written from the
reference's arithmetic, in the reference's order of operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def centred_covariance_by_matrix(x: torch.Tensor) -> torch.Tensor:
    """fast-MPN-COV's ``Covpool`` (also iSICE's and DifferentiableSVD's): X Ī Xᵀ with the dense M×M
    centring matrix Ī = (1/M)(I − 𝟙𝟙ᵀ/M); x (B, d, h, w)."""
    b, d, h, w = x.shape
    m = h * w
    x = x.reshape(b, d, m)
    i_hat = (-1.0 / m / m) * torch.ones(m, m, dtype=x.dtype) + (1.0 / m) * torch.eye(m, dtype=x.dtype)
    return x @ i_hat @ x.mT


def triu_rows(c: torch.Tensor) -> torch.Tensor:
    """fast-MPN-COV's ``Triuvec``: the upper triangle row by row, (B, d, d) -> (B, d(d+1)/2)."""
    d = c.shape[-1]
    index = torch.ones(d, d).triu().reshape(d * d).nonzero().squeeze(1)
    return c.reshape(c.shape[0], d * d)[:, index]


# ---------------------------------------------------------- KingJamesSong/FastDifferentiableMatSqrt @ 5506d70


def mpa_coefficients():
    """``torch_utils.py`` module level: mpmath at 32 digits, Taylor of √(1 − x) to degree 10, [5/5] Padé."""
    import mpmath

    with mpmath.workdps(32):
        a = mpmath.taylor(lambda x: mpmath.sqrt(1 - x), 0, 10)
        p, q = mpmath.pade(a, 5, 5)
    return [float(v) for v in a], [float(v) for v in p], [float(v) for v in q]


class RefMatrixRootLya(torch.autograd.Function):
    """``MPA_Lya`` (``kind="pade"``), and with ``matrix_taylor_polynomial`` in place of
    ``matrix_pade_approximant`` (``kind="taylor"``, the line the reference comments out).
    DEPARTURE (Taylor only): the reference's ``matrix_taylor_polynomial`` adds in place into the identity it
    also saves for the backward; here the saved identity stays I, as the paper's method has it."""

    @staticmethod
    def forward(ctx, m, kind):
        a, pade_p, pade_q = mpa_coefficients()
        norm_m = torch.norm(m, dim=[1, 2]).reshape(m.size(0), 1, 1)
        eye = torch.eye(m.size(1), dtype=m.dtype).reshape(1, m.size(1), m.size(1)).repeat(m.size(0), 1, 1)
        p = m / norm_m
        p_app = eye - p
        p_hat = p_app
        if kind == "taylor":
            root = eye.clone()
            for i in range(10):
                root = root + a[i + 1] * p_hat
                p_hat = p_hat.bmm(p_app)
        else:
            p_sqrt, q_sqrt = pade_p[0] * eye, pade_q[0] * eye
            for i in range(5):
                p_sqrt = p_sqrt + pade_p[i + 1] * p_hat
                q_sqrt = q_sqrt + pade_q[i + 1] * p_hat
                p_hat = p_hat.bmm(p_app)
            root = torch.linalg.solve(q_sqrt, p_sqrt)
        m_sqrt = root * torch.sqrt(norm_m)
        ctx.save_for_backward(m_sqrt, norm_m, eye)
        return m_sqrt

    @staticmethod
    def backward(ctx, grad_output):
        m_sqrt, norm_m, eye = ctx.saved_tensors
        b = m_sqrt / torch.sqrt(norm_m)
        c = grad_output / torch.sqrt(norm_m)
        for _ in range(8):
            b_2 = b.bmm(b)
            c = 0.5 * (c.bmm(3.0 * eye - b_2) - b_2.bmm(c) + b.bmm(c).bmm(b))
            b = 0.5 * b.bmm(3.0 * eye - b_2)
        return 0.5 * c, None


def fast_mat_sqrt_head(maps: torch.Tensor, kind: str) -> torch.Tensor:
    """Covpool -> MPA_Lya (or MTP_Lya) -> Triuvec: the GCP meta-layer with this root, (B, d, h, w) -> vector."""
    return triu_rows(RefMatrixRootLya.apply(centred_covariance_by_matrix(maps), kind))


# ---------------------------------------------------------- KingJamesSong/DifferentiableSVD @ 1676a64


def svd_pade_head(maps: torch.Tensor) -> torch.Tensor:
    """``src/representation/SVD_Pade.py``: Covpool (double) -> Eigen_decomposition -> Power (triangle)."""
    import mpmath

    with mpmath.workdps(20):
        pade_p, pade_q = mpmath.pade(mpmath.taylor(lambda x: 1 / (1 - x), 0, 100), 50, 50)
    pade_p, pade_q = [float(v) for v in pade_p], [float(v) for v in pade_q]

    def pade_approximants(s):
        s = torch.diagonal(s, dim1=1, dim2=2)
        eye = torch.eye(s.shape[1], dtype=s.dtype).view(1, s.shape[1], s.shape[1]).repeat(s.shape[0], 1, 1)
        p = s.unsqueeze(-1) / s.unsqueeze(-2) - eye
        p = torch.where(p < 1.0, p, 1.0 / p)
        a1 = s.view(s.shape[0], s.shape[1], 1).repeat(1, 1, s.shape[1])
        a1_t = a1.transpose(1, 2)
        a1 = 1.0 / torch.where(a1 >= a1_t, a1, -a1_t)
        a1 = a1 * (torch.ones(s.shape[1], s.shape[1], dtype=s.dtype) - eye)
        p_app, q_app, p_hat = torch.ones_like(p) * pade_p[0], torch.ones_like(p) * pade_q[0], torch.ones_like(p)
        for i in range(50):
            p_hat = p_hat * p
            p_app = p_app + pade_p[i + 1] * p_hat
            q_app = q_app + pade_q[i + 1] * p_hat
        return a1 * p_app / q_app

    class Eig(torch.autograd.Function):
        @staticmethod
        def forward(ctx, p):
            _, eig_diag, eig_vec = torch.svd(p, some=True, compute_uv=True)
            eig_diag = eig_diag.clamp_min(torch.finfo(p.dtype).eps).diag_embed()
            ctx.save_for_backward(eig_vec, eig_diag)
            return eig_vec, eig_diag

        @staticmethod
        def backward(ctx, d_vec, d_diag):
            eig_vec, eig_diag = ctx.saved_tensors
            k = pade_approximants(eig_diag)
            finite = k[torch.isfinite(k)]
            k = torch.where(k == float("inf"), finite.max(), torch.where(k == float("-inf"), finite.min(), k))
            inner = k.transpose(1, 2) * (eig_vec.transpose(1, 2).bmm(d_vec)) + torch.diag_embed(
                torch.diagonal(d_diag, dim1=1, dim2=2))
            return eig_vec.bmm(inner).bmm(eig_vec.transpose(1, 2))

    class Power(torch.autograd.Function):
        @staticmethod
        def forward(ctx, eig_vec, eig_diag):
            ctx.save_for_backward(eig_vec, eig_diag)
            return eig_vec.bmm(eig_diag.sqrt()).bmm(eig_vec.transpose(1, 2))

        @staticmethod
        def backward(ctx, g):
            eig_vec, eig_diag = ctx.saved_tensors
            d_vec = (g + g.transpose(1, 2)).bmm(eig_vec).bmm(eig_diag.pow(0.5))
            power_eig = torch.diag_embed(torch.diagonal(eig_diag, dim1=1, dim2=2).pow(-0.5))
            d_diag = 0.5 * torch.diag_embed(torch.diagonal(
                power_eig.bmm(eig_vec.transpose(1, 2)).bmm(g).bmm(eig_vec), dim1=1, dim2=2))
            return d_vec, d_diag

    dtype = maps.dtype
    cov = centred_covariance_by_matrix(maps.double())
    return triu_rows(Power.apply(*Eig.apply(cov))).to(dtype)


# ---------------------------------------------------------- jiangtaoxie/fast-MPN-COV: BCNN.py, CBP.py


def bcnn(maps: torch.Tensor, thresh: float = 1e-8) -> torch.Tensor:
    """``src/representation/BCNN.py`` ``BCNN.forward`` (is_vec): X Xᵀ/M, signed sqrt, flatten, ℓ2."""
    b, d, h, w = maps.shape
    x = maps.reshape(b, d, h * w)
    x = 1.0 / (h * w) * x.bmm(x.transpose(1, 2))
    x = torch.mul(x.sign(), torch.sqrt(x.abs() + thresh)).view(b, -1)
    return F.normalize(x)


def cbp(maps: torch.Tensor, proj_dim: int = 8192, thresh: float = 1e-8) -> torch.Tensor:
    """``src/representation/CBP.py`` ``CBP``: sketches drawn after ``torch.manual_seed(1)`` (here inside
    ``fork_rng``, so the caller's RNG is untouched), one image at a time, ifft(fft ⊙ fft) per position,
    summed, signed sqrt, ℓ2. DEPARTURE: ``torch.fft(x, 1)`` / ``torch.ifft`` (removed in PyTorch 1.8) are
    written with ``torch.fft.fft`` / ``ifft`` on complex tensors, the same transforms."""
    b, d, h, w = maps.shape
    with torch.random.fork_rng():
        torch.manual_seed(1)
        hashes = [torch.randint(0, proj_dim, (d,), dtype=torch.long) for _ in range(2)]
        weights = [(2 * torch.randint(0, 2, (d,)) - 1).float() for _ in range(2)]
    sparse = []
    for hk, wk in zip(hashes, weights):
        indices = torch.cat((torch.arange(d).reshape(1, -1), hk.reshape(1, -1)), dim=0)
        dense = torch.sparse_coo_tensor(indices, wk, (d, proj_dim), check_invariants=True).to_dense()
        sparse.append(dense.to(maps.dtype))
    x_flat = maps.permute(0, 2, 3, 1).contiguous().view(-1, d)
    rows = []
    for img in range(b):
        batch_x = x_flat[img * h * w:(img + 1) * h * w]
        sketch1 = torch.fft.fft(batch_x.mm(sparse[0]), dim=1)
        sketch2 = torch.fft.fft(batch_x.mm(sparse[1]), dim=1)
        rows.append(torch.fft.ifft(sketch1 * sketch2, dim=1).real.sum(0))
    y = torch.stack(rows)
    return F.normalize(torch.mul(y.sign(), torch.sqrt(y.abs() + thresh)))


# ---------------------------------------------------------- csiro-robotics/iSICE @ e90a5b8, SICE.py


def sice_inverse_sqrtm(x: torch.Tensor, iter_n: int) -> torch.Tensor:
    """``Sqrtm.forward``: the coupled iteration's Z after ``iter_n`` steps over √trace (autograd backward:
    the reference's hand-written one returns its transpose, fast-MPN-COV issue 28; every use is symmetrised)."""
    b, dim = x.shape[0], x.shape[1]
    i3 = 3.0 * torch.eye(dim, dtype=x.dtype).view(1, dim, dim).repeat(b, 1, 1)
    norm_a = (1.0 / 3.0) * x.mul(i3).sum(dim=1).sum(dim=1)
    a = x.div(norm_a.view(b, 1, 1))
    zy = 0.5 * (i3 - a)
    y, z = a.bmm(zy), zy
    for _ in range(1, iter_n - 1):
        zy = 0.5 * (i3 - z.bmm(y))
        y, z = y.bmm(zy), zy.bmm(z)
    zyz = 0.5 * (i3 - z.bmm(y)).bmm(z)
    return zyz * torch.pow(norm_a, -0.5).view(b, 1, 1)


def isice(maps: torch.Tensor, u: torch.Tensor, lr: float = 1.0, sparsity: float = 0.01, steps: int = 5):
    """``SICE._sice`` then ``Triuvec``; the regulariser's uniform draw ``u`` (d,) is passed in."""
    c = centred_covariance_by_matrix(maps)
    c = c / torch.diagonal(c, dim1=-2, dim2=-1).sum(-1).view(-1, 1, 1)
    reg = 1e-10 + 1e-9 * torch.diag(u).view(1, c.shape[1], c.shape[2]).repeat(c.shape[0], 1, 1).to(c.dtype)
    zz = sice_inverse_sqrtm(c + reg, 7)
    llt = zz.bmm(zz)
    for i in range(steps):
        plus, minus = torch.relu(llt), torch.relu(-llt)
        zz = sice_inverse_sqrtm(llt + reg, 7)
        grad12 = -zz.bmm(zz) + 0.5 * (c.transpose(1, 2) + c)
        dec = 1 - i / (steps - 1.0)
        plus = torch.relu(plus - lr * dec * (grad12 + sparsity))
        minus = torch.relu(minus - lr * dec * (-grad12 + sparsity))
        llt = plus - minus
        llt = 0.5 * (llt + llt.transpose(1, 2))
    out = llt / torch.sqrt(torch.diagonal(llt, dim1=-2, dim2=-1).sum(-1)).view(-1, 1, 1)
    return triu_rows(out)


# ---------------------------------------------------------- mingzeG/DropCov @ f4741b3, CNNs/


def dropcov_train(x: torch.Tensor, eca_weight: torch.Tensor) -> torch.Tensor:
    """``ResNet_ACD.forward`` after ``layer_reduce_relu`` in training: ``eca_layer`` (softmax branch),
    ``balance_rate``, then ``Covariance`` and ``Triuvec``; x (B, d, h, w) the reduced map. The dropout
    draws from the global RNG, as the reference's ``nn.Dropout2d``. DEPARTURE: the reference moves the
    log₂ d to CUDA; here it stays on the input's device."""
    y = F.adaptive_avg_pool2d(x, 1)
    y = F.conv1d(y.squeeze(-1).transpose(-1, -2), eca_weight, padding=1).transpose(-1, -2).unsqueeze(-1)
    y = torch.softmax(y, dim=1)
    x = x * y.expand_as(x) + x
    y = torch.flatten(y, 1)
    d = x.shape[1]
    cor = torch.sum(centred_covariance_by_matrix(x) / 1.0, dim=2)
    cor_, y_ = torch.norm(cor, dim=1, p=2), torch.norm(y, dim=1, p=2)
    rate = torch.mul(y, cor).sum(dim=1) / (y_ * cor_)
    b_rate = torch.clamp(1 - (10 / torch.tensor([d], dtype=torch.float64).log2()) * rate.mean(), 0, 1)
    x = torch.nn.Dropout2d(b_rate.item())(x)
    return triu_rows(centred_covariance_by_matrix(x))


# ---------------------------------------------------------- jiangtaoxie/SoT @ 5da3c37, sot_src/


def mgcrp_svpn(tokens: torch.Tensor, wr_weight: torch.Tensor, start: torch.Tensor | None, heads: int,
               width: int, alpha: float = 0.5) -> torch.Tensor:
    """``MultiHeadPooling.forward`` with ``Covariance`` (remove_mean, the 3-D ``adaptive_avg_pool2d``) and
    ``svPN`` (iterNum 1, svNum 1, init_weight 'learn', vec 'full'); ``start`` None: no normalisation.
    DEPARTURE: svPN's U, S, V buffers are made in the input's dtype (the reference makes them float32)."""
    b, n, _ = tokens.shape
    qk = F.linear(tokens, wr_weight).reshape(b, n, 2, heads, width).permute(2, 0, 3, 1, 4)
    q, k = qk[0].reshape(b * heads, n, width), qk[1].reshape(b * heads, n, width)

    def remove_mean(x):
        x = x.transpose(-1, -2)
        x = x - F.adaptive_avg_pool2d(x, (1, 1))
        return x.transpose(-1, -2)

    q, k = remove_mean(q), remove_mean(k)
    s = (1.0 / n) * (q.transpose(-1, -2).bmm(k))
    if start is not None:
        v = start.view(1, width, 1).expand(s.shape[0], width, 1)
        u = F.normalize(s.bmm(v), dim=1)
        v = F.normalize(s.transpose(1, 2).bmm(u), dim=1)
        sv = u.transpose(1, 2).bmm(s).bmm(v)
        big_u = torch.zeros(s.shape[0], width, 1, dtype=s.dtype)
        big_s = torch.zeros(s.shape[0], 1, 1, dtype=s.dtype)
        big_v = torch.zeros(s.shape[0], width, 1, dtype=s.dtype)
        big_u[:, :, 0], big_s[:, 0, 0], big_v[:, :, 0] = u.squeeze(-1), sv.view(-1), v.squeeze(-1)
        rest = s - u.bmm(sv).bmm(v.transpose(1, 2))
        s = big_u.bmm(big_s.pow(alpha)).bmm(big_v.transpose(1, 2)) + rest.div(sv.pow(1 - alpha) + 1e-5)
    return s.reshape(b, -1)
