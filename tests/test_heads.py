"""iSQRT-COV and 3G heads against hand-derivable values, float64.

Every expected number below is re-derived in this file by an independent route: the iSQRT-COV
iteration run on scalars (it acts on each eigenvalue separately), numpy's eigh, and central
finite differences, never by the library's own code.

iSQRT-COV (Li et al., CVPR 2018) maps Σ (d×d, PSD) to C: A = Σ / tr Σ; Y₀ = A, Z₀ = I;
T_k = ½(3I − Z_{k−1} Y_{k−1}), Y_k = Y_{k−1} T_k, Z_k = T_k Z_{k−1} (k = 1 … N−1);
Y_N = ½ Y_{N−1}(3I − Z_{N−1} Y_{N−1}); C = √(tr Σ) · Y_N. All iterates are polynomials in A, so with
A = U diag(λ) Uᵀ, C = U diag(√(tr Σ) · f_N(λ_i)) Uᵀ, where f_N is the same recurrence on scalars
(``scalar_ns``). f_1(λ) = λ(3 − λ)/2, e.g. f_1(0.8) = 0.88; f_N(λ) → √λ as N grows.
"""

import numpy as np
import pytest
import torch

from lgm_gcp.models.heads.covariance import (
    CovarianceSqrt,
    IsqrtCovHead,
    covariance,
    eigh_sqrt,
    newton_schulz_sqrt,
    triu_vec,
)
from lgm_gcp.models.heads.gap import GAPHead
from lgm_gcp.models.heads.three_g import ReweightBlock, ThreeGHead

D64 = torch.float64


def scalar_ns(lam: float, n: int) -> float:
    """f_N(λ): the coupled Newton–Schulz recurrence on one eigenvalue ratio (see the module docstring)."""
    y, z = lam, 1.0
    for _ in range(n - 1):
        t = 0.5 * (3.0 - z * y)
        y, z = y * t, t * z
    return 0.5 * y * (3.0 - z * y)


def closed_form_isqrt(sigma: np.ndarray, n: int) -> np.ndarray:
    """C = U diag(√s f_N(λ_i/s)) Uᵀ with numpy's eigh, s = tr Σ."""
    s = np.trace(sigma)
    lam, u = np.linalg.eigh(sigma)
    return (u * [np.sqrt(s) * scalar_ns(max(v, 0.0) / s, n) for v in lam]) @ u.T


def finite_difference(fn, x: np.ndarray, symmetric: bool = False, h: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar fn. With ``symmetric``, perturb x_ij and x_ji together and
    halve off the diagonal: the symmetrised gradient ½(g + gᵀ) of a function of a symmetric matrix."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        if symmetric:
            e[idx[::-1]] = h
        g = (fn(x + e) - fn(x - e)) / (2 * h)
        grad[idx] = g / 2 if symmetric and idx[0] != idx[1] else g
    return grad


# f_N(λ) for N = 1, 2, 3, 5, rounded to the digits shown (each re-derived by scalar_ns below)
F_TABLE = {
    0.8: (0.88, 0.894080, 0.894427, 0.8944272),
    0.5: (0.625, 0.693359, 0.706709, 0.7071068),
    0.25: (0.34375, 0.434387, 0.487650, 0.499999),
    0.2: (0.28, 0.365120, 0.425992, 0.447206),
    0.1: (0.145, 0.202257, 0.262016, 0.315420),
    0.05: (0.07375, 0.106614, 0.147802, 0.216164),
    0.02: (0.0298, 0.044038, 0.063922, 0.116196),
}


@pytest.mark.parametrize("lam", sorted(F_TABLE))
def test_scalar_newton_schulz_map_matches_the_table(lam):
    """diag(λ, 1 − λ) has trace 1, so C[0, 0] = f_N(λ)."""
    sigma = torch.diag(torch.tensor([lam, 1.0 - lam], dtype=D64))[None]
    for n, expected in zip((1, 2, 3, 5), F_TABLE[lam]):
        assert scalar_ns(lam, n) == pytest.approx(expected, abs=1e-6)  # the table, re-derived
        assert newton_schulz_sqrt(sigma, n)[0, 0, 0].item() == pytest.approx(expected, abs=2e-6)
    assert scalar_ns(lam, 1) == pytest.approx(lam * (3 - lam) / 2, abs=1e-15)


def test_null_space_is_kept():
    sigma = torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=D64))[None]
    assert newton_schulz_sqrt(sigma, 5)[0, 2, 2].item() == 0.0


@pytest.mark.parametrize("n,expected", [(1, (1.9677398202, 0.6260990337)), (2, (1.9992236573, 0.8164331399)),
                                        (3, (1.9999995480, 0.9525476190)), (5, (2.0000000000, 0.9999834432))])
def test_t1_diagonal_values(n, expected):
    """T1: Σ = diag(4, 1), trace 5, ratios 0.8 and 0.2, so C = √5 · diag(f_N(0.8), f_N(0.2))."""
    assert expected == pytest.approx((5**0.5 * scalar_ns(0.8, n), 5**0.5 * scalar_ns(0.2, n)), abs=1e-9)
    out = newton_schulz_sqrt(torch.diag(torch.tensor([4.0, 1.0], dtype=D64))[None], n)[0]
    torch.testing.assert_close(out.diagonal(), torch.tensor(expected, dtype=D64), atol=1e-9, rtol=0)
    assert out[0, 1].item() == 0.0


@pytest.mark.parametrize("n,expected", [(5, (0.2499661289, 0.5001272058)), (3, (0.2255215600, 0.5741873436))])
def test_t1_gradient_of_trace(n, expected):
    """∂ tr C / ∂Σ at diag(4, 1), diagonal part: the derivative of L(a, b) = √(a+b)·(f_N(a/(a+b)) +
    f_N(b/(a+b))), C's trace along diagonal Σ, by central differences. (The exact root would give
    ∂(√a + √b) = (1/(2√4), 1/(2√1)) = (0.25, 0.5); N = 5 is close to it.)"""
    def trace_of_root(diag):
        a, b = diag
        return (a + b) ** 0.5 * (scalar_ns(a / (a + b), n) + scalar_ns(b / (a + b), n))

    assert expected == pytest.approx(tuple(finite_difference(trace_of_root, np.array([4.0, 1.0]))), abs=1e-8)
    sigma = torch.diag(torch.tensor([4.0, 1.0], dtype=D64))[None].requires_grad_()
    newton_schulz_sqrt(sigma, n).diagonal(dim1=-2, dim2=-1).sum().backward()
    torch.testing.assert_close(sigma.grad[0].diagonal(), torch.tensor(expected, dtype=D64), atol=1e-9, rtol=0)


def test_t2_values_and_symmetrised_gradient():
    """T2: Σ = [[2, 1], [1, 2]] has eigenvalues 3, 1 on (1, ±1)/√2; trace 4, ratios 0.75 and 0.25, so
    C = [[p + q, p − q], [p − q, p + q]] with p = f_5(0.75), q = f_5(0.25) (√4/2 = 1). The exact root
    has √3/2 ± ½: 1.3660254038 and 0.3660254038. The gradient of C[0, 0] is the symmetrised central
    difference of that closed form."""
    p, q = scalar_ns(0.75, 5), scalar_ns(0.25, 5)
    assert (p + q, p - q) == pytest.approx((1.3660247861, 0.3660260214), abs=1e-9)
    fd = finite_difference(lambda m: closed_form_isqrt(m, 5)[0, 0], np.array([[2.0, 1.0], [1.0, 2.0]]), True)
    np.testing.assert_allclose(fd, [[0.3801836775, -0.0528351371], [-0.0528351371, 0.0141576561]], atol=1e-8)
    sigma = torch.tensor([[[2.0, 1.0], [1.0, 2.0]]], dtype=D64, requires_grad=True)
    out = newton_schulz_sqrt(sigma, 5)
    torch.testing.assert_close(out[0], torch.tensor([[1.3660247861, 0.3660260214], [0.3660260214, 1.3660247861]],
                                                    dtype=D64), atol=1e-9, rtol=0)
    out[0, 0, 0].backward()
    g = 0.5 * (sigma.grad[0] + sigma.grad[0].T)
    torch.testing.assert_close(g, torch.tensor([[0.3801836775, -0.0528351371], [-0.0528351371, 0.0141576561]],
                                               dtype=D64), atol=1e-9, rtol=0)
    exact = torch.tensor([[1.3660254038, 0.3660254038], [0.3660254038, 1.3660254038]], dtype=D64)
    assert ((out[0] - exact).norm() / exact.norm()).item() == pytest.approx(6.177e-7, rel=1e-3)


def test_t2b_three_by_three():
    """T2b: a 3×3 with no closed-form eigenvectors; the expected C is the eigh closed form."""
    sigma = torch.tensor([[[4.0, 1, 0], [1, 3, 1], [0, 1, 2]]], dtype=D64)
    expected = torch.tensor([[1.9806925976, 0.2758270441, -0.0271852316], [0.2758270441, 1.6776803219, 0.3301975073],
                             [-0.0271852316, 0.3301975073, 1.3746680462]], dtype=D64)
    np.testing.assert_allclose(closed_form_isqrt(sigma[0].numpy(), 5), expected.numpy(), atol=1e-9)
    torch.testing.assert_close(newton_schulz_sqrt(sigma, 5)[0], expected, atol=1e-9, rtol=0)


def test_t3_full_pipeline_values_and_gradient():
    """T3: maps X = [[1, 2, 3], [0, 1, 4]] (d = 2 channels, M = 3 positions). Centred rows (−1, 0, 1)
    and (−5/3, −2/3, 7/3); Σ = X̄X̄ᵀ/M = [[2/3, 4/3], [4/3, 26/9]]. The vector is the upper triangle
    (C00, C01, C11) of the eigh closed form of C; the gradient of its sum with respect to X is the
    central difference of that whole pipeline."""
    def pipeline(maps):
        centred = maps - maps.mean(1, keepdims=True)
        c = closed_form_isqrt(centred @ centred.T / maps.shape[1], 5)
        return c[0, 0] + c[0, 1] + c[1, 1]

    maps = np.array([[1.0, 2, 3], [0, 1, 4]])
    c = closed_form_isqrt(np.array([[2 / 3, 4 / 3], [4 / 3, 26 / 9]]), 5)
    np.testing.assert_allclose((c[0, 0], c[0, 1], c[1, 1]), (0.4550931901, 0.6647694317, 1.5630422430), atol=1e-9)
    np.testing.assert_allclose(finite_difference(pipeline, maps), [[-0.6041996305, 0.1944764162, 0.4097232144],
                                                                   [-0.2536393213, -0.2181415782, 0.4717808995]],
                               atol=1e-8)
    x = torch.tensor([[[[1.0, 2, 3]], [[0, 1, 4]]]], dtype=D64, requires_grad=True)  # (1, 2, 1, 3)
    torch.testing.assert_close(covariance(x)[0], torch.tensor([[2 / 3, 4 / 3], [4 / 3, 26 / 9]], dtype=D64))
    vec = CovarianceSqrt(iterations=5)(x)
    torch.testing.assert_close(vec[0], torch.tensor([0.4550931901, 0.6647694317, 1.5630422430], dtype=D64),
                               atol=1e-9, rtol=0)
    vec.sum().backward()
    expected = torch.tensor([[-0.6041996305, 0.1944764162, 0.4097232144], [-0.2536393213, -0.2181415782, 0.4717808995]],
                            dtype=D64)
    torch.testing.assert_close(x.grad[0, :, 0], expected, atol=1e-9, rtol=0)


def test_covariance_hand_written_backward_passes_gradcheck():
    """The covariance's one-product backward, (G + Gᵀ) X_c / M, against finite differences for every
    (non-symmetric) one-hot upstream gradient gradcheck feeds it, M = 6 positions, d = 4 (float64)."""
    x = torch.randn(3, 4, 2, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(covariance, (x,))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_gradcheck_whole_pipeline_from_maps(n):
    x = torch.randn(2, 5, 3, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(CovarianceSqrt(iterations=n), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_gradcheck_sqrt_through_symmetric_parametrisation(n):
    p = torch.randn(1, 4, 4, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: newton_schulz_sqrt(q @ q.transpose(1, 2) + 0.1 * torch.eye(4, dtype=D64),
                                                                 n), (p,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_newton_schulz_hand_written_backward_gradchecks_on_non_symmetric_input(n):
    """The iteration's hand-written adjoint keeps every transpose, so it is the exact gradient of the
    function as computed even where the input is not symmetric (a symmetric input hides a missing
    transpose): gradcheck on an SPD matrix plus a non-symmetric 0.05-sized perturbation (float64)."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 4, dtype=D64, generator=gen)
    sigma = q @ q.mT + 0.5 * torch.eye(4, dtype=D64) + 0.05 * torch.randn(2, 4, 4, dtype=D64, generator=gen)
    assert torch.autograd.gradcheck(lambda s: newton_schulz_sqrt(s, n), (sigma.requires_grad_(),))


def test_gradcheck_full_head_with_reduction_block():
    head = IsqrtCovHead(in_channels=4, dim=3, iterations=5).double().eval()
    x = torch.randn(2, 4, 3, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(head, (x,), eps=1e-6, atol=1e-5)


def test_output_is_symmetric_and_converges_to_eigh_root():
    feats = torch.randn(3, 6, 40, dtype=D64)
    sigma = covariance(feats.view(3, 6, 5, 8))
    c5 = newton_schulz_sqrt(sigma, 5)
    torch.testing.assert_close(c5, c5.transpose(1, 2), atol=1e-14, rtol=0)
    torch.testing.assert_close(newton_schulz_sqrt(sigma, 40), eigh_sqrt(sigma), atol=1e-9, rtol=1e-9)
    assert (c5 - eigh_sqrt(sigma)).norm() > 1e-6  # N = 5 is not the exact root


def test_scale_and_permutation_equivariance():
    sigma = covariance(torch.randn(2, 5, 4, 4, dtype=D64))
    torch.testing.assert_close(newton_schulz_sqrt(4.0 * sigma, 5), 2.0 * newton_schulz_sqrt(sigma, 5))
    perm = torch.eye(5, dtype=D64)[torch.tensor([3, 0, 4, 1, 2])]
    torch.testing.assert_close(newton_schulz_sqrt(perm @ sigma @ perm.T, 5),
                               perm @ newton_schulz_sqrt(sigma, 5) @ perm.T)


def test_rank_deficient_seven_by_seven_stays_finite():
    head = IsqrtCovHead(in_channels=32, dim=64, iterations=5)
    x = torch.randn(2, 32, 7, 7, requires_grad=True)  # M = 49 < d = 64
    out = head(x)
    out.square().sum().backward()
    assert out.shape == (2, 64 * 65 // 2) and torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_vectorisation_orders():
    m = torch.arange(9.0).view(1, 3, 3)
    m = m + m.transpose(1, 2)
    assert triu_vec(m, "row").tolist() == [[m[0, 0, 0], m[0, 0, 1], m[0, 0, 2], m[0, 1, 1], m[0, 1, 2], m[0, 2, 2]]]
    assert triu_vec(m, "col").tolist() == [[m[0, 0, 0], m[0, 0, 1], m[0, 1, 1], m[0, 0, 2], m[0, 1, 2], m[0, 2, 2]]]
    assert triu_vec(torch.randn(2, 256, 256), "row").shape == (2, 32896)


def test_three_g_without_blocks_is_isqrt_with_jitter_in_column_order():
    torch.manual_seed(0)
    g = ThreeGHead(in_channels=6, dim=4, blocks=0).double().eval()
    x = torch.randn(2, 6, 3, 3, dtype=D64)
    maps = g.reduce(x)
    sigma = covariance(maps) + 1e-7 * torch.eye(4, dtype=D64)
    torch.testing.assert_close(g(x), triu_vec(newton_schulz_sqrt(sigma, 5), "col"))


def test_three_g_block_weights_positions_in_unit_interval_and_counts_parameters():
    """At d = 256: five d→d 1×1 convs (5 · 65,536) + d→d/4 (16,384) + d/4→1 (64) + the 1→1 scale (1)
    = 344,129 conv weights; BN after the five d-wide convs and the d/4 one: 2 · (5 · 256 + 64) = 2,688."""
    assert (5 * 256 * 256 + 256 * 64 + 64 + 1, 2 * (5 * 256 + 64)) == (344_129, 2_688)
    block = ReweightBlock(256)
    conv = sum(p.numel() for n, p in block.named_parameters() if p.dim() == 4)
    bn = sum(p.numel() for n, p in block.named_parameters() if p.dim() == 1)
    assert (conv, bn) == (344_129, 2_688)
    a = torch.rand(2, 256, 3, 3) + 0.1
    ratio = block(a, a) / a
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)  # one weight per position
    assert ((ratio > 0) & (ratio < 1)).all()


def test_three_g_gradcheck():
    head = ThreeGHead(in_channels=4, dim=4, blocks=2).double().eval()
    x = torch.randn(1, 4, 3, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(head, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_covariance_and_iteration_run_in_fp32_under_autocast(dtype):
    head = IsqrtCovHead(in_channels=8, dim=6)
    x = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=dtype):
        out = head(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, head(x), atol=0.05, rtol=0.05)


def test_eigh_option_gives_the_exact_root():
    x = torch.randn(2, 4, 5, 5, dtype=D64)
    vec = CovarianceSqrt(sqrt="eigh")(x)
    root = eigh_sqrt(covariance(x))
    torch.testing.assert_close(vec, triu_vec(root))
    torch.testing.assert_close(root @ root, covariance(x))


def test_gap_head_with_recipe_mlp_and_dropout():
    head = GAPHead(16, dropout=0.5, mlp=[8, 4])
    assert head.out_features == 4
    assert head(torch.randn(3, 16, 2, 2)).shape == (3, 4)
    assert GAPHead(16)(torch.ones(1, 16, 2, 2)).tolist() == [[1.0] * 16]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_spectral_and_matmul_algorithms_agree_on_rank_deficient_input(n):
    from lgm_gcp.models.heads.covariance import isqrt

    sigma = covariance(torch.randn(3, 6, 2, 2, dtype=D64)).requires_grad_()  # M = 4 < d = 6: zero eigenvalues
    upstream = torch.randn(3, 6, 6, dtype=D64)
    spectral = isqrt(sigma, n, "spectral")
    (g_spec,) = torch.autograd.grad((spectral * upstream).sum(), sigma)
    matmul = isqrt(sigma, n, "matmul")
    (g_mat,) = torch.autograd.grad((matmul * upstream).sum(), sigma)
    torch.testing.assert_close(spectral, matmul, atol=1e-13, rtol=0)
    torch.testing.assert_close(g_spec, 0.5 * (g_mat + g_mat.transpose(1, 2)), atol=1e-12, rtol=0)


@pytest.mark.parametrize("algorithm", ["spectral", "matmul"])
def test_gradcheck_each_algorithm(algorithm):
    x = torch.randn(2, 4, 3, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(CovarianceSqrt(5, algorithm=algorithm), (x,), eps=1e-6, atol=1e-5)


def test_three_g_zero_gate_init_starts_every_gate_at_one_half_and_learns():
    """gate_init=zero: W_b = 0, so u = 0 and every gate is sigmoid(0) = ½ (the slope ¼ at its largest); W_b
    itself gets a gradient at once, and after one SGD step the convs before it do too."""
    torch.manual_seed(0)
    block = ReweightBlock(8, reduction=4, gate_init="zero")
    a = torch.relu(torch.randn(2, 8, 3, 3))
    torch.testing.assert_close(block(a, a), 0.5 * a, atol=0, rtol=0)
    block(a, a).sum().backward()
    assert block.score[0].weight.grad.abs().max() > 0 and block.p1[0].weight.grad.abs().max() == 0
    torch.optim.SGD(block.parameters(), lr=0.1).step()
    block.zero_grad()
    block(a, a).sum().backward()
    assert block.p1[0].weight.grad.abs().max() > 0
    kaiming = ReweightBlock(8, reduction=4, gate_init="kaiming")
    assert kaiming.score[0].weight.std() > 0.5  # the reference's fan_out init, std √2
