"""The second-order heads after iSQRT-COV (DropCov, iSICE, SoT, B-CNN, CBP) and the GCP head's other square
roots (taylor, pade, svd_pade) against their references (tests/references_second_order.py) in float64
(relative 1e-10) and float32 (1e-5), forward and gradient; gradcheck in float64; autocast."""

import pytest
import references_second_order as ref
import torch
import torch.nn.functional as F

from lgm_gcp.models.heads.bilinear import BilinearHead, CompactBilinearHead
from lgm_gcp.models.heads.covariance import CovarianceSqrt, covariance, eigh_sqrt, triu_vec
from lgm_gcp.models.heads.dropcov import DropCovHead
from lgm_gcp.models.heads.isice import ISICEHead, sparse_inverse_covariance, trace
from lgm_gcp.models.heads.roots import geometric_pade, pade_divided_differences, polynomial_sqrt
from lgm_gcp.models.heads.sot import SoTHead

TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])


def value_and_grad(fn, x, seed=0):
    """fn(x) and the gradient of ⟨fn(x), G⟩ for a fixed random G."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    upstream = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad((out * upstream).sum(), x)
    return out.detach(), grad


def assert_same(ours, theirs, x, dtype):
    out, grad = value_and_grad(ours, x)
    ref_out, ref_grad = value_and_grad(theirs, x)
    torch.testing.assert_close(out, ref_out, **TOLERANCES[dtype])
    torch.testing.assert_close(grad, ref_grad, **TOLERANCES[dtype])


def maps(*shape, dtype=torch.float64, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).relu().to(dtype)


def pooled(head):
    """The head up to its pooled vector (no post-pooling layers)."""
    return lambda x: head.pool(x)


def seeded(fn, seed=0):
    """fn with the global RNG reseeded on every call (and restored after): the same draws each time, as
    gradcheck's repeated calls and a reference compared on the same dropout mask need."""
    def run(*args):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return fn(*args)
    return run


# ------------------------------------------------------------------ square roots of the GCP head


@DTYPES
@pytest.mark.parametrize("kind", ["taylor", "pade"])
def test_taylor_and_pade_roots_equal_fast_differentiable_mat_sqrt(kind, dtype):
    x = maps(2, 6, 5, 5, dtype=dtype)  # M = 25 > d = 6: full rank
    ours = CovarianceSqrt(sqrt=kind, algorithm="matmul")
    assert_same(ours, lambda m: ref.fast_mat_sqrt_head(m, kind), x, dtype)


@DTYPES
def test_svd_pade_root_equals_differentiable_svd(dtype):
    x = maps(2, 6, 5, 5, dtype=dtype)
    assert_same(CovarianceSqrt(sqrt="svd_pade", algorithm="matmul"), ref.svd_pade_head, x, dtype)


def test_pade_divided_differences_are_exact_where_eigenvalues_differ_and_finite_where_they_meet():
    # K_ij = 1/(λ_i − λ_j): the [50/50] Padé of Σ_{k≤100} rᵏ equals 1/(1 − r) to float64 precision for r < 1
    lam = torch.tensor([[0.25, 0.31, 0.44, 0.5, 0.63]], dtype=torch.float64)
    gaps = lam[0].unsqueeze(-1) - lam[0].unsqueeze(-2)
    exact = torch.where(gaps == 0, 0.0, 1.0 / gaps)
    torch.testing.assert_close(pade_divided_differences(lam)[0], exact, rtol=1e-9, atol=0)
    tied = pade_divided_differences(torch.tensor([[1e-16, 1e-16, 0.5]], dtype=torch.float64))
    assert torch.isfinite(tied).all()  # the pole at r = 1 replaced by the batch's largest finite entry
    assert len(geometric_pade()[0]) == 51


def test_lyapunov_backward_is_the_exact_roots_gradient_and_the_roots_approach_eigh():
    # for a well-conditioned Σ the [5/5] Padé root is √Σ to ~1e-7 and the 8-step sign iteration solves the
    # Lyapunov equation, so the gradient equals autograd through the exact eigh root (symmetric upstream)
    x = torch.randn(3, 5, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = x @ x.mT / 40 + 0.5 * torch.eye(5, dtype=torch.float64)
    g = torch.randn(3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = g + g.mT
    a, b = sigma.clone().requires_grad_(), sigma.clone().requires_grad_()
    (polynomial_sqrt(a, "pade") * g).sum().backward()
    (eigh_sqrt(b) * g).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-4)
    torch.testing.assert_close(polynomial_sqrt(sigma, "pade"), eigh_sqrt(sigma), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["taylor", "pade", "svd_pade"])
def test_gradcheck_each_root_from_maps(kind):
    # near-isotropic maps: three rows of the 8x8 Sylvester-Hadamard matrix (zero mean, orthogonal, so Σ = I)
    # plus 5 % noise. The trace-free ratios sit near 1/√3, where the degree-10 Taylor polynomial and the
    # Padé approximant are √ to ~1e-7 and the 8-step sign iteration has converged, and the eigenvalues are
    # distinct (svd_pade's divided differences exist)
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    hadamard = torch.kron(torch.kron(h2, h2), h2)
    x = hadamard[1:4] + 0.05 * torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = x.view(1, 3, 2, 4).requires_grad_()
    # the Taylor polynomial's own error at these ratios (~1e-5 relative) separates its derivative from the
    # exact root's gradient the Lyapunov backward returns; Padé's is below gradcheck's default tolerance
    tol = dict(atol=1e-5, rtol=1e-3) if kind == "taylor" else {}
    assert torch.autograd.gradcheck(CovarianceSqrt(sqrt=kind, algorithm="matmul"), (x,), **tol)


# ------------------------------------------------------------------ B-CNN and compact bilinear


@DTYPES
def test_bcnn_equals_fast_mpn_covs_bcnn(dtype):
    x = maps(2, 6, 3, 4, dtype=dtype)
    assert_same(pooled(BilinearHead(6).to(dtype)), ref.bcnn, x, dtype)


def test_bcnn_reduces_only_a_trunk_wider_than_max_channels():
    assert BilinearHead(512).out_features == 512 ** 2 and BilinearHead(2048, max_channels=256).out_features == 256 ** 2
    assert not any(isinstance(m, torch.nn.Conv2d) for m in BilinearHead(512).modules())


@DTYPES
def test_cbp_equals_fast_mpn_covs_cbp_with_the_same_sketches(dtype):
    # D = 8 < d² = 36 products: every bin is a sum of several, none exactly zero (a bin that is zero in exact
    # arithmetic holds ±1e-17 of FFT rounding, whose signed square root is ±1e-4 in either implementation)
    x = maps(2, 6, 3, 3, dtype=dtype)
    head = CompactBilinearHead(6, out_dim=8).to(dtype)
    before = torch.random.get_rng_state()
    assert_same(pooled(head), lambda m: ref.cbp(m, proj_dim=8), x, dtype)
    assert torch.equal(torch.random.get_rng_state(), before)  # the sketches come from a private generator


def test_cbp_inner_products_estimate_squared_inner_products():
    # Tensor Sketch: E⟨φ(x), φ(y)⟩ = ⟨x, y⟩² over the hash draws; the mean of 200 draws at D = 256
    from lgm_gcp.models.heads.bilinear import TensorSketchPool

    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    estimates = []
    for seed in range(200):
        pool = TensorSketchPool(16, 256, seed).double()
        f1, f2 = (torch.fft.rfft(x @ s, dim=-1) for s in (pool.sketch1, pool.sketch2))
        phi = torch.fft.irfft(f1 * f2, n=256, dim=-1)
        estimates.append(float(phi[0] @ phi[1]))
    exact = float(x[0] @ x[1]) ** 2
    assert abs(sum(estimates) / len(estimates) - exact) < 0.1 * max(exact, 1.0)


# ------------------------------------------------------------------ iSICE


@DTYPES
def test_isice_equals_the_reference_solver(dtype):
    x = maps(2, 6, 3, 3, dtype=dtype)  # M = 9 > d = 6
    u = torch.rand(6, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)

    def ours(m):  # SparseInverseCovariance.forward with the regulariser's draw u given
        c = covariance(m)
        return triu_vec(sparse_inverse_covariance(c / trace(c), u, 5, 0.01, 1.0, 7))

    assert_same(ours, lambda m: ref.isice(m, u, lr=1.0, sparsity=0.01, steps=5), x, dtype)


def test_isice_one_step_takes_the_full_step_where_the_reference_divides_by_zero():
    c = torch.eye(4, dtype=torch.float64).unsqueeze(0) / 4
    u = torch.zeros(4, dtype=torch.float64)
    assert torch.isfinite(sparse_inverse_covariance(c, u, steps=1)).all()


def test_isice_gradcheck_with_its_regulariser_fixed():
    torch.manual_seed(0)
    head = ISICEHead(4, dim=3, steps=2).double()
    assert torch.autograd.gradcheck(seeded(head.pool, 5), (maps(1, 4, 2, 3).requires_grad_(),))


# ------------------------------------------------------------------ DropCov


@DTYPES
def test_dropcov_training_forward_equals_resnet_acd_with_the_same_draw(dtype):
    # the reduced map the reference's ECA sees, its channels scaled unevenly (U(0,1)⁴), and ECA's taps set to
    # (0, −10, 0) so that its softmax favours the channels of smallest mean while the covariance's row sums
    # favour the largest: the cosine is low and the rate falls inside (0, 1) (0.81)
    head = DropCovHead(5, dim=16).to(dtype).train()
    head.drop.eca.weight.data = torch.tensor([[[0.0, -10.0, 0.0]]], dtype=dtype)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 16, 7, 7, generator=g).relu() * torch.rand(1, 16, 1, 1, generator=g) ** 4).to(dtype)
    eca = head.drop.eca.weight.detach()
    assert_same(seeded(lambda m: head.cov(head.drop(m)), 7), seeded(lambda m: ref.dropcov_train(m, eca), 7), x, dtype)
    assert 0.0 < head.drop.last_rate < 1.0


def test_dropcov_eval_is_the_plain_covariance_triangle():
    head = DropCovHead(5, dim=6).double().eval()
    x = maps(2, 6, 4, 4)
    torch.testing.assert_close(head.cov(head.drop(x)), ref.triu_rows(ref.centred_covariance_by_matrix(x)))


def test_dropcov_gradcheck_with_the_draw_fixed():
    head = DropCovHead(4, dim=3).double().train()
    assert torch.autograd.gradcheck(seeded(head.pool), (maps(2, 4, 3, 3).requires_grad_(),))


# ------------------------------------------------------------------ SoT / DropCov's ViT head


@DTYPES
@pytest.mark.parametrize("norm", ["svpn", "none"])
def test_sot_cross_covariance_equals_multi_head_pooling(norm, dtype):
    torch.manual_seed(0)
    head = SoTHead(8, heads=2, width=3, norm=norm, centre="scalar", class_token="none").to(dtype).eval()
    tokens = torch.randn(2, 5, 8, dtype=dtype, generator=torch.Generator().manual_seed(4))
    start = head.cross.norm.start.detach() if norm == "svpn" else None
    weight = head.cross.project.weight.detach()
    assert_same(head.cross, lambda t: ref.mgcrp_svpn(t, weight, start, 2, 3), tokens, dtype)


def test_sot_feature_centring_is_the_papers_cross_covariance():
    torch.manual_seed(0)
    head = SoTHead(4, heads=1, width=2, norm="none", class_token="none").double()
    tokens = torch.randn(1, 6, 4, dtype=torch.float64)
    q, k = (tokens @ head.cross.project.weight.T).split(2, dim=-1)
    qc, kc = q - q.mean(1, keepdim=True), k - k.mean(1, keepdim=True)
    torch.testing.assert_close(head.cross(tokens), (qc.mT @ kc / 6).reshape(1, -1))


def test_sot_concatenates_the_class_token_or_the_mean_token():
    torch.manual_seed(0)
    head = SoTHead(4, heads=1, width=2).double().eval()
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    cls = torch.randn(2, 4, dtype=torch.float64)
    assert torch.equal(head.pool((x, cls))[:, :4], cls)
    torch.testing.assert_close(head.pool(x)[:, :4], x.mean((2, 3)))
    assert head.out_features == 4 + 4


def test_sot_token_dropout_drops_whole_tokens_for_q_and_k_alike():
    torch.manual_seed(0)
    head = SoTHead(4, heads=1, width=2, norm="none", token_dropout=0.5, class_token="none").double().train()
    tokens = torch.randn(1, 6, 4, dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        out = head.cross(tokens)
        torch.manual_seed(1)
        mask = F.dropout(torch.ones(1, 6, 1, dtype=torch.float64), 0.5)
    q, k = (tokens @ head.cross.project.weight.T).split(2, dim=-1)
    q, k = q * mask, k * mask
    qc, kc = q - q.mean(1, keepdim=True), k - k.mean(1, keepdim=True)
    torch.testing.assert_close(out, (qc.mT @ kc / 6).reshape(1, -1))


def test_sot_gradcheck():
    torch.manual_seed(0)
    head = SoTHead(4, heads=2, width=2).double().eval()
    assert torch.autograd.gradcheck(head.pool, (torch.randn(1, 4, 2, 2, dtype=torch.float64, requires_grad=True),))


# ------------------------------------------------------------------ every head: gradcheck, autocast

HEADS = {"bcnn": lambda: BilinearHead(4), "cbp": lambda: CompactBilinearHead(4, out_dim=4),
         "isice": lambda: ISICEHead(4, dim=3, steps=2), "dropcov": lambda: DropCovHead(4, dim=3),
         "sot": lambda: SoTHead(4, heads=1, width=3), "taylor": lambda: _gcp("taylor"),
         "pade": lambda: _gcp("pade"), "svd_pade": lambda: _gcp("svd_pade")}


def _gcp(sqrt):
    from lgm_gcp.models.heads.covariance import IsqrtCovHead
    return IsqrtCovHead(4, dim=3, sqrt=sqrt, algorithm="matmul")


@pytest.mark.parametrize("name", ["bcnn", "cbp"])
def test_gradcheck_bilinear_heads(name):
    # positive maps: the signed square root has a kink at 0, where finite differences straddle the sign
    x = (maps(2, 4, 2, 3) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(pooled(HEADS[name]().double()), (x,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_each_head_trains_under_autocast_without_nan(name, dtype):
    """Three SGD steps of a conv + head + linear classifier under CPU autocast: finite losses and weights,
    and the pooled vector in float32 (the matrix part runs with autocast off)."""
    torch.manual_seed(0)
    head = HEADS[name]()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), head, torch.nn.Linear(head.out_features, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(6, 1, 7, 7), torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(3):
        with torch.autocast("cpu", dtype=dtype):
            loss = F.cross_entropy(model(x), y)
            assert head.pool(model[0](x)).dtype == torch.float32
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_pade_root_of_a_training_sized_batch_is_finite_with_every_thread():
    """(128, 256, 256) float32 covariances of 49 positions, the size MKL's two-thread batched LU failed on
    ("Parameter 6 was incorrect on entry to SLASWP"): the solve runs on one thread and gives the values the
    float64 computation gives (Padé is far from √Σ itself here: rank 48 of 256, the near-singular case)."""
    x = torch.randn(128, 256, 49, generator=torch.Generator().manual_seed(0)).relu()
    sigma = x @ x.mT / 49
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, 2))
    try:
        root = polynomial_sqrt(sigma, "pade")
    finally:
        torch.set_num_threads(threads)
    assert torch.isfinite(root).all() and torch.get_num_threads() == threads
    torch.testing.assert_close(root[:4].double(), polynomial_sqrt(sigma[:4].double(), "pade"), rtol=1e-3, atol=1e-5)


def test_isice_recomputing_its_inverses_gives_the_same_gradient_and_saves_fewer_tensors():
    c = covariance(maps(2, 6, 3, 3))
    c = c / trace(c)
    u = torch.rand(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads, saved = [], []
    for recompute in (False, True):
        x = c.clone().requires_grad_()
        count = []

        def pack(t, count=count):
            count.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = sparse_inverse_covariance(x, u, steps=3, recompute=recompute)
        (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append(x.grad)
        saved.append(sum(count))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-14)
    assert saved[1] < saved[0] / 3  # 4 inverses x 7 iterations of stored products, against their 4 inputs
