"""iSQRT-COV through the M×M Gram matrix (``head.algorithm=gram``) against the d×d paths, float64.

The expected values are the d×d algorithms' own (``matmul``: the coupled Newton–Schulz iteration on
Σ = X_c X_cᵀ/M, checked elsewhere against hand values; ``spectral``: its eigenbasis evaluation), an
independent route: the Gram path never forms Σ. It rests on the push-through identity
X f(XᵀX) = f(XXᵀ) X for polynomials f, and every Newton–Schulz iterate is a polynomial in Σ:
√t·Y_N(Σ/t) = X R_N(G/t) Xᵀ/√t, R_N(a) = f_N(a)/a, G = XᵀX, X = X_c/√M, t = tr G = tr Σ.
"""

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from lgm_gcp.models.heads import eigen
from lgm_gcp.models.heads.covariance import CovarianceSqrt, covariance, isqrt, resolve_algorithm
from lgm_gcp.models.heads.gram import GramSpectral, gram_isqrt, gram_pairs
from lgm_gcp.models.heads.three_g import ThreeGHead

D64 = torch.float64
INNER = ["spectral", "matmul"]


def spread_maps(b: int, d: int, m: int, decades: float = 6.0, seed: int = 0) -> torch.Tensor:
    """(b, d, m) maps whose channels' scales span ``decades`` orders of magnitude: a widely spread
    spectrum (and a rank-deficient one, rank ≤ min(d, m − 1), wherever m ≤ d)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-decades / 2, decades / 2, d, dtype=D64).view(1, d, 1)
    return torch.randn(b, d, m, generator=g, dtype=D64) * scales


def d_by_d(feats: torch.Tensor, algorithm: str, jitter: float = 0.0) -> torch.Tensor:
    sigma = covariance(feats)
    return isqrt(sigma + jitter * torch.eye(feats.shape[1], dtype=feats.dtype), 5, algorithm)


def value_and_grad(fn, feats, upstream):
    x = feats.clone().requires_grad_()
    out = fn(x)
    (grad,) = torch.autograd.grad((out * upstream).sum(), x)
    return out.detach(), grad


def relative(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("d,m", [(8, 2), (8, 7), (8, 8), (8, 9), (64, 9), (32, 40), (256, 49), (16, 3)])
def test_gram_equals_both_d_by_d_algorithms_forward_and_backward(inner, d, m):
    feats = spread_maps(3, d, m, decades=3.0)
    upstream = torch.randn(3, d, d, dtype=D64)  # not symmetric: the triangle vector's gradient is not
    out, grad = value_and_grad(lambda x: gram_isqrt(x, 5, inner=inner), feats, upstream)
    for algorithm in ("matmul", "spectral"):
        ref, ref_grad = value_and_grad(lambda x, a=algorithm: d_by_d(x, a), feats, upstream)
        assert relative(out, ref) < 1e-10
        assert relative(grad, ref_grad) < 1e-10


@pytest.mark.parametrize("inner", INNER)
def test_gram_on_a_six_decade_spectrum(inner):
    feats = spread_maps(2, 32, 12, decades=6.0, seed=1)
    upstream = torch.randn(2, 32, 32, dtype=D64)
    out, grad = value_and_grad(lambda x: gram_isqrt(x, 5, inner=inner), feats, upstream)
    ref, ref_grad = value_and_grad(lambda x: d_by_d(x, "matmul"), feats, upstream)
    assert relative(out, ref) < 1e-10 and relative(grad, ref_grad) < 1e-10


@pytest.mark.parametrize("m", [3, 12])
def test_gram_pairs_with_the_3g_jitter_equal_the_jittered_covariance(m):
    """With Σ + εI the iterates are s·I + X P Xᵀ: the scalar part carries ε exactly."""
    feats = spread_maps(2, 10, m, decades=2.0)
    upstream = torch.randn(2, 10, 10, dtype=D64)
    for eps in (1e-7, 0.05):
        out, grad = value_and_grad(lambda x, e=eps: gram_isqrt(x, 5, e), feats, upstream)
        ref, ref_grad = value_and_grad(lambda x, e=eps: d_by_d(x, "matmul", e), feats, upstream)
        assert relative(out, ref) < 1e-10 and relative(grad, ref_grad) < 1e-10


def test_three_g_head_gram_equals_matmul():
    torch.manual_seed(0)
    head = ThreeGHead(6, dim=8, blocks=2, algorithm="gram").double().eval()
    maps = torch.randn(3, 6, 2, 3, dtype=D64)  # M = 6 < d = 8
    gram = head(maps)
    head.cov.algorithm = "matmul"
    torch.testing.assert_close(gram, head(maps), atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_gram_spectral_gradcheck(n):
    x = spread_maps(2, 6, 4, decades=1.0).requires_grad_()
    x = (x - x.mean(2, keepdim=True)).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: GramSpectral.apply(v, n), (x,), eps=1e-6, atol=1e-6)


def test_gram_pairs_and_whole_path_gradcheck():
    x = spread_maps(2, 5, 3, decades=1.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: gram_pairs(v, 3, 0.01)[1], (x,), eps=1e-6, atol=1e-6)
    for inner in INNER:
        assert torch.autograd.gradcheck(lambda v, i=inner: gram_isqrt(v, 5, inner=i), (x,), eps=1e-6, atol=1e-6)


def test_a_batch_whose_maps_differ_in_scale_is_computed_per_sample():
    """Each sample's trace normalisation is its own: scaling one map by c scales its output by c
    (C is homogeneous of degree 1 in X) and leaves the other samples' outputs unchanged."""
    feats = spread_maps(3, 16, 5, decades=2.0)
    scaled = feats * torch.tensor([1e-3, 1.0, 1e3], dtype=D64).view(3, 1, 1)
    for inner in INNER:
        base, big = gram_isqrt(feats, inner=inner), gram_isqrt(scaled, inner=inner)
        for i, c in enumerate((1e-3, 1.0, 1e3)):
            assert relative(big[i], c * base[i]) < 1e-12
        assert relative(big, d_by_d(scaled, "matmul")) < 1e-10


def test_one_position_gives_what_the_d_by_d_paths_give():
    """M = 1: the centred map is zero, Σ = 0 and tr Σ = 0, so every path divides 0 by 0; the trainer's
    non-finite guard then names the step. The Gram path must not hide that as a finite zero."""
    feats = torch.randn(2, 8, 1, dtype=D64)
    for inner in INNER:
        gram = gram_isqrt(feats, inner=inner)
        for algorithm in ("matmul", "spectral"):
            ref = d_by_d(feats, algorithm)
            assert torch.isnan(ref).all() and torch.isnan(gram).all()


def test_float32_on_trained_like_features_stays_close_to_float64():
    """Trained-like: BN-then-ReLU maps (half the entries zero) with channel scales over two decades, at
    the presets' shapes. Worst relative error (max |Δ| / max |·|) of the vector and of ∂L/∂maps."""
    torch.manual_seed(0)
    worst = 0.0
    for d, m in ((256, 49), (256, 196), (128, 49)):
        scales = torch.logspace(-1, 1, d).view(1, d, 1)
        maps = torch.relu(torch.randn(4, d, m) * scales + 0.3)
        upstream = torch.randn(4, d, d)
        out32, g32 = value_and_grad(lambda x: gram_isqrt(x, 5), maps, upstream)
        out64, g64 = value_and_grad(lambda x: gram_isqrt(x, 5), maps.double(), upstream.double())
        worst = max(worst, relative(out32.double(), out64), relative(g32.double(), g64))
    assert worst < 2e-5, worst


@pytest.mark.parametrize("is_cuda", [False, True])
def test_auto_picks_gram_where_the_map_has_fewer_positions_than_channels(is_cuda):
    assert resolve_algorithm("auto", 256, 49, is_cuda) == "gram"
    assert resolve_algorithm("auto", 256, 196, is_cuda) == "gram"
    assert resolve_algorithm("auto", 128, 196, is_cuda) == ("matmul" if is_cuda else "spectral")
    assert resolve_algorithm("auto", 64, 64, is_cuda) == ("matmul" if is_cuda else "spectral")
    assert resolve_algorithm("matmul", 256, 49, is_cuda) == "matmul"


def test_auto_head_output_is_the_gram_output_when_m_is_below_d():
    maps = torch.relu(torch.randn(2, 12, 2, 3))
    assert torch.equal(CovarianceSqrt(algorithm="auto")(maps), CovarianceSqrt(algorithm="gram")(maps))
    maps = torch.relu(torch.randn(2, 4, 3, 3))
    assert torch.equal(CovarianceSqrt(algorithm="auto")(maps), CovarianceSqrt(algorithm="spectral")(maps))


def test_gram_runs_in_fp32_under_autocast():
    maps = torch.relu(torch.randn(2, 16, 3, 3)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = CovarianceSqrt(algorithm="gram")(maps)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, CovarianceSqrt(algorithm="matmul")(maps.float()), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------- eigh returning NaN


def test_safe_eigh_recomputes_samples_whose_decomposition_is_not_finite(monkeypatch):
    sym = covariance(torch.randn(3, 6, 4))
    real = torch.linalg.eigh

    def nan_for_sample_one(a):
        lam, u = real(a)
        if a.dtype == torch.float32:
            lam, u = lam.clone(), u.clone()
            lam[1, -1] = float("nan")
        return lam, u

    monkeypatch.setattr(torch.linalg, "eigh", nan_for_sample_one)
    lam, u = eigen.safe_eigh(sym)
    lam64, u64 = real(sym.double())
    assert torch.isfinite(lam).all()
    torch.testing.assert_close(lam[1], lam64[1].float())
    torch.testing.assert_close(lam[0], real(sym)[0][0])  # the finite samples are kept as they were


def test_spectral_path_falls_back_when_eigh_fails_in_float64_too(monkeypatch):
    sigma = covariance(torch.randn(2, 6, 4))
    real = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a: (real(a)[0] * float("nan"), real(a)[1]))
    torch.testing.assert_close(isqrt(sigma, 5, "spectral"), isqrt(sigma, 5, "matmul"))
    maps = torch.randn(2, 6, 4)
    torch.testing.assert_close(gram_isqrt(maps, inner="spectral"), gram_isqrt(maps, inner="matmul"))


def test_the_covariance_on_which_mkl_eigh_returned_nan_now_gives_the_matmul_value():
    """A rank-3 256×256 covariance from a trained small CNN (2×2 maps, 74 dead channels), on which
    float32 ``torch.linalg.eigh`` with two MKL threads returned NaN with no error and stopped a run at
    step 108. Stored exactly (float32 upper triangle) because the failure depends on its last bits."""
    raw = gzip.decompress((Path(__file__).parent / "data" / "eigh_nan_covariance.npy.gz").read_bytes())
    tri = torch.from_numpy(np.load(io.BytesIO(raw)))
    sigma = torch.zeros(256, 256)
    rows, cols = torch.triu_indices(256, 256)
    sigma[rows, cols] = tri
    sigma[cols, rows] = tri
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        spectral = isqrt(sigma[None], 5, "spectral")
    finally:
        torch.set_num_threads(threads)
    assert torch.isfinite(spectral).all()
    torch.testing.assert_close(spectral, isqrt(sigma[None], 5, "matmul"), atol=2e-4, rtol=0)


def test_spectral_path_on_many_batches_of_dead_channel_spectra_matches_matmul():
    """Hundreds of exactly-zero eigenvalues (dead channels, M = 4 positions), batch after batch, forward
    and backward against the product iteration: what a digits run with 2×2 maps feeds the head."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        maps = torch.relu(torch.randn(8, 256, 4, generator=g) - 0.5)
        maps[:, torch.randperm(256, generator=g)[:74]] = 0.0
        upstream = torch.randn(8, 256, 256, generator=g)
        spec, g_spec = value_and_grad(lambda x: d_by_d(x, "spectral"), maps, upstream)
        mat, g_mat = value_and_grad(lambda x: d_by_d(x, "matmul"), maps, upstream)
        assert torch.isfinite(spec).all() and torch.isfinite(g_spec).all()
        assert relative(spec, mat) < 1e-4 and relative(g_spec, g_mat) < 1e-3
