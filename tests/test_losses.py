"""L-GM and large-margin losses against hand-computed values, float64.

Every expected number is re-derived in this file by a plain-Python transcription of the papers'
formulas (``lgm_reference``, ``large_margin_reference``) and central finite differences for the
gradients, independent of the library's matmul/select formulations.

L-GM (Wan et al., CVPR 2018), class means μ_k, variances σ_k: d_k = ½ Σ_d (x_d − μ_kd)²/σ_kd;
logits z_k = −d_k [− ½ log|Σ_k| with log-det]; the margin scales the target's distance, z_y − α d_y;
loss = CE + λ · L_lkd with L_lkd = ½‖x − μ_y‖² (half), ‖x − μ_y‖² (full) or d_y + ½ log|Σ_y| (paper).

Large-margin softmax (Kobayashi, BMVC 2019): q = softmax of the C − 1 non-target logits,
R = ½ Σ_{j≠y} (q_j − 1/(C−1)) log q_j, loss = CE + 0.3 R.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from lgm_gcp.losses.large_margin import LargeMarginLoss, large_margin_loss, large_margin_regularizer
from lgm_gcp.losses.lgm import LGMLoss
from lgm_gcp.schedules.margin import MarginSchedule

from conftest import resolved

D64 = torch.float64
MU = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=D64)


def lgm_reference(x, y, mu, var, alpha, lam, form="half", log_det=False):
    """(mean loss, mean CE, mean likelihood, logits) of the L-GM formulas above, one sample at a time."""
    ces, lkds, all_logits = [], [], []
    for xi, yi in zip(x, y):
        d = [0.5 * sum((a - m) ** 2 / v for a, m, v in zip(xi, mk, vk)) for mk, vk in zip(mu, var)]
        logdet = [sum(math.log(v) for v in vk) for vk in var]
        logits = [-dk - (0.5 * ld if log_det else 0.0) for dk, ld in zip(d, logdet)]
        margin = list(logits)
        margin[yi] -= alpha * d[yi]
        ce = math.log(sum(math.exp(z) for z in margin)) - margin[yi]
        sq = sum((a - m) ** 2 for a, m in zip(xi, mu[yi]))
        lkd = {"half": 0.5 * sq, "full": sq, "paper": d[yi] + 0.5 * logdet[yi]}[form]
        ces.append(ce)
        lkds.append(lkd)
        all_logits.append(logits)
    ce, lkd = sum(ces) / len(ces), sum(lkds) / len(lkds)
    return ce + lam * lkd, ce, lkd, all_logits


def central_difference(fn, values, h=1e-6):
    """∂fn/∂values[i] for a nested list of floats, by central differences."""
    import copy

    grads = copy.deepcopy(values)
    for i, row in enumerate(values):
        for j in range(len(row)):
            up, down = copy.deepcopy(values), copy.deepcopy(values)
            up[i][j] += h
            down[i][j] -= h
            grads[i][j] = (fn(up) - fn(down)) / (2 * h)
    return grads


MU_LIST, UNIT = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], [[1.0, 1.0]] * 3


def lgm(alpha=0.0, lam=0.0, **kw):
    loss = LGMLoss(2, 3, margin={"policy": "CONSTANT", "value": alpha}, likelihood_weight=lam, **kw).double()
    with torch.no_grad():
        loss.means.copy_(MU)
    return loss


@pytest.mark.parametrize("alpha,ce", [(0.0, 0.7586236757), (0.1, 0.7855190331), (1.0, 1.0549569196)])
def test_lgm_t1_cross_entropy_per_margin(alpha, ce):
    """T1: x = (1, 0), means (0, 0), (2, 0), (0, 2), σ = 1: d = (0.5, 0.5, 2.5), logits −d. With the
    margin the target logit is −0.5(1 + α): CE = 0.5(1 + α) + log(e^{−0.5(1+α)} + e^{−0.5} + e^{−2.5});
    at α = 0, 0.5 + log(2e^{−0.5} + e^{−2.5}) = 0.7586236757."""
    assert ce == pytest.approx(0.5 * (1 + alpha) + math.log(math.exp(-0.5 * (1 + alpha)) + math.exp(-0.5)
                                                            + math.exp(-2.5)), abs=1e-9)
    x, y = torch.tensor([[1.0, 0.0]], dtype=D64), torch.tensor([0])
    loss, logits, logs = lgm(alpha)(x, y)
    torch.testing.assert_close(logits, torch.tensor([[-0.5, -0.5, -2.5]], dtype=D64))
    assert loss.item() == pytest.approx(ce, abs=1e-9) and logs["ce"].item() == pytest.approx(ce, abs=1e-9)


def test_lgm_t1_total_and_gradients():
    """T1 with α = 0.1, λ = 0.1: total = CE(0.1) + 0.1 · ½‖x − μ₀‖² = 0.7855190331 + 0.05; the
    gradients are central differences of ``lgm_reference`` in x and in the means."""
    def total(x_list, mu_list=MU_LIST):
        return lgm_reference(x_list, [0], mu_list, UNIT, 0.1, 0.1)[0]

    assert total([[1.0, 0.0]]) == pytest.approx(0.8355190331, abs=1e-9)
    assert central_difference(total, [[1.0, 0.0]])[0] == pytest.approx([1.1129249865, 0.1297206674], abs=1e-8)
    mu_grad = central_difference(lambda m: total([[1.0, 0.0]], m), MU_LIST)
    assert sum(mu_grad, []) == pytest.approx([-0.6985286758, 0.0, -0.4792566443, 0.0, 0.0648603337, -0.1297206674],
                                             abs=1e-8)
    crit = lgm(0.1, 0.1)
    x = torch.tensor([[1.0, 0.0]], dtype=D64, requires_grad=True)
    loss, _, logs = crit(x, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.8355190331, abs=1e-9) and logs["likelihood"].item() == 0.5
    loss.backward()
    torch.testing.assert_close(x.grad, torch.tensor([[1.1129249865, 0.1297206674]], dtype=D64), atol=1e-9, rtol=0)
    expected = torch.tensor([[-0.6985286758, 0.0], [-0.4792566443, 0.0], [0.0648603337, -0.1297206674]], dtype=D64)
    torch.testing.assert_close(crit.means.grad, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("form,total", [("half", 0.6319370079), ("full", 0.6631870079)])
def test_lgm_t2_batch_mean_and_likelihood_conventions(form, total):
    """T2: two samples (1, 0) → class 0 and (0, 1.5) → class 2, α = 0.3, λ = 0.1; CE and the
    likelihood are batch means; 'full' doubles the likelihood term of 'half'."""
    ref = lgm_reference([[1.0, 0.0], [0.0, 1.5]], [0, 2], MU_LIST, UNIT, 0.3, 0.1, form)
    assert (ref[0], ref[1]) == pytest.approx((total, 0.6006870079), abs=1e-9)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.5]], dtype=D64)
    loss, logits, logs = lgm(0.3, 0.1, likelihood_form=form)(x, torch.tensor([0, 2]))
    assert loss.item() == pytest.approx(total, abs=1e-9)
    assert logs["ce"].item() == pytest.approx(0.6006870079, abs=1e-9)
    assert logits.argmax(1).tolist()[1] == 2


def _t3(log_det, form):
    crit = LGMLoss(2, 2, margin={"policy": "CONSTANT", "value": 0.5}, likelihood_weight=0.1, likelihood_form=form,
                   covariance="diagonal", log_det=log_det, update_sigma=True).double()
    with torch.no_grad():
        crit.means.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
        crit.log_sigma.copy_(torch.tensor([[1.0, 4.0], [0.25, 1.0]], dtype=D64).log())
    return crit(torch.tensor([[1.0, 1.0]], dtype=D64), torch.tensor([0]))


T3_ARGS = ([[1.0, 1.0]], [0], [[0.0, 0.0], [2.0, 0.0]], [[1.0, 4.0], [0.25, 1.0]], 0.5, 0.1)


def test_lgm_t3_paper_form_with_log_det():
    """T3: diagonal Σ₀ = diag(1, 4), Σ₁ = diag(0.25, 1), x = (1, 1), y = 0, α = 0.5, λ = 0.1:
    d = (½(1 + 1/4), ½(1/0.25 + 1)) = (0.625, 2.5), log|Σ| = (log 4, log 0.25), so the logits are
    (−0.625 − log 2, −2.5 + log 2) = (−1.3181471806, −1.8068528194)."""
    ref_loss, ref_ce, ref_lkd, ref_logits = lgm_reference(*T3_ARGS, form="paper", log_det=True)
    assert ref_logits[0] == pytest.approx([-1.3181471806, -1.8068528194], abs=1e-9)
    assert (ref_ce, ref_lkd, ref_loss) == pytest.approx((0.6089204040, 1.3181471806, 0.7407351221), abs=1e-9)
    loss, logits, logs = _t3(True, "paper")
    torch.testing.assert_close(logits, torch.tensor([[-1.3181471806, -1.8068528194]], dtype=D64), atol=1e-9, rtol=0)
    assert logs["ce"].item() == pytest.approx(0.6089204040, abs=1e-9)
    assert logs["likelihood"].item() == pytest.approx(1.3181471806, abs=1e-9)
    assert loss.item() == pytest.approx(0.7407351221, abs=1e-9)


def test_lgm_t3_caffe_diagonal_form():
    """T3 as Caffe computes it: no log-det in the logits, likelihood ½‖x − μ₀‖² = 1."""
    ref_loss, ref_ce, ref_lkd, _ = lgm_reference(*T3_ARGS, form="half", log_det=False)
    assert (ref_ce, ref_lkd, ref_loss) == pytest.approx((0.1902991404, 1.0, 0.2902991404), abs=1e-9)
    loss, _, logs = _t3(False, "half")
    assert logs["ce"].item() == pytest.approx(0.1902991404, abs=1e-9) and logs["likelihood"].item() == 1.0
    assert loss.item() == pytest.approx(0.2902991404, abs=1e-9)


def test_lgm_unit_sigma_equals_linear_layer_with_bias():
    crit = lgm()
    x = torch.randn(5, 2, dtype=D64)
    linear = x @ MU.T - 0.5 * MU.square().sum(1)
    torch.testing.assert_close(F.softmax(crit.logits(x), 1), F.softmax(linear, 1))
    t1 = F.softmax(crit.logits(torch.tensor([[1.0, 0.0]], dtype=D64)), 1)
    # softmax(−0.5, −0.5, −2.5): e^{−0.5} / (2e^{−0.5} + e^{−2.5}) and e^{−2.5} / (same)
    norm = 2 * math.exp(-0.5) + math.exp(-2.5)
    assert (math.exp(-0.5) / norm, math.exp(-2.5) / norm) == pytest.approx((0.4683105308, 0.0633789383), abs=1e-9)
    torch.testing.assert_close(t1, torch.tensor([[0.4683105308, 0.4683105308, 0.0633789383]], dtype=D64))


def test_lgm_translation_invariance_and_monotone_margin_and_margin_free_prediction():
    x, y = torch.randn(6, 2, dtype=D64), torch.tensor([0, 1, 2, 0, 1, 2])
    shift = torch.tensor([3.0, -1.5], dtype=D64)
    moved = lgm(0.2, 0.1)
    with torch.no_grad():
        moved.means.add_(shift)
    torch.testing.assert_close(lgm(0.2, 0.1)(x, y)[0], moved(x + shift, y)[0])
    ces = [lgm(a)(x, y)[2]["ce"].item() for a in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert all(b >= a for a, b in zip(ces, ces[1:]))
    base = lgm(0.0).logits(x).argmax(1)
    for a in (0.1, 1.0, 5.0):
        assert torch.equal(lgm(a)(x, y)[1].argmax(1), base)


def test_lgm_gradcheck_features_means_and_sigma():
    crit = LGMLoss(3, 4, margin={"policy": "CONSTANT", "value": 0.3}, likelihood_weight=0.1, covariance="diagonal",
                   log_det=True, likelihood_form="paper", update_sigma=True).double()
    x, y = torch.randn(5, 3, dtype=D64, requires_grad=True), torch.tensor([0, 1, 2, 3, 0])
    params = (crit.means, crit.log_sigma)
    assert torch.autograd.gradcheck(lambda a: crit(a, y)[0], (x,))
    iso = LGMLoss(3, 4, update_sigma=True, likelihood_weight=0.2).double()
    assert torch.autograd.gradcheck(lambda a: iso(a, y, step=6000)[0], (x,))
    loss = crit(x, y)[0]
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads):  # central differences on the parameters
        flat = p.detach().clone().view(-1)
        for i in range(0, flat.numel(), 3):
            with torch.no_grad():
                p.view(-1)[i] += 1e-6
                up = crit(x, y)[0].item()
                p.view(-1)[i] -= 2e-6
                down = crit(x, y)[0].item()
                p.view(-1)[i] += 1e-6
            assert g.view(-1)[i].item() == pytest.approx((up - down) / 2e-6, abs=1e-6)


def test_lgm_scales_to_gcp_features_without_a_bcd_tensor():
    torch.manual_seed(0)
    crit = LGMLoss(32896, 1000)
    x, y = torch.randn(256, 32896) * 0.05, torch.randint(0, 1000, (256,))
    loss, logits, _ = crit(x, y)
    loss.backward()
    naive = -0.5 * (x[:3, None, :] - crit.means[None]).square().sum(-1)
    torch.testing.assert_close(logits[:3], naive.detach(), rtol=1e-4, atol=1e-2)
    assert torch.isfinite(crit.means.grad).all()


def trained_like_lgm() -> tuple:
    """An L-GM head at the GCP dimension (D = 32,896, 20 classes) whose means share a positive offset of
    1 (± 0.05), and 16 features 0.01-close to their class means: (criterion, features, targets)."""
    torch.manual_seed(0)
    d, classes = 32896, 20
    crit = LGMLoss(d, classes)
    with torch.no_grad():
        crit.means.copy_(1.0 + 0.05 * torch.randn(classes, d))
    y = torch.arange(16) % classes
    return crit, crit.means.detach()[y] + 0.01 * torch.randn(16, d), y


@pytest.mark.parametrize("autocast", [False, True])
def test_lgm_float32_logits_stay_accurate_on_trained_like_features(autocast):
    """GCP-sized features (D = 32,896) near their class means, all means sharing a positive offset
    as post-ReLU covariance features do: ‖x − μ‖² ≈ D·1e-4 ≈ 3.3 while ‖x‖² ≈ D ≈ 32,896, so the
    expanded form ‖x‖² − 2x·μ + ‖μ‖² would lose ~1e-2 relative in float32. Against float64 the
    logits must stay within 1e-5 relative (of the largest logit), also under bf16 autocast."""
    crit, x, y = trained_like_lgm()
    x64, mu64 = x.double(), crit.means.detach().double()
    exact = -0.5 * (x64.square().sum(1, keepdim=True) - 2 * x64 @ mu64.T + mu64.square().sum(1))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = crit.logits(x)
    assert got.dtype == torch.float32
    assert ((got.double() - exact).abs().max() / exact.abs().max()).item() < 1e-5  # the expanded form: 1.4e-4


def test_lgm_sigma_frozen_by_default_and_never_decayed():
    crit = LGMLoss(4, 3)
    assert not crit.log_sigma.requires_grad and crit.log_sigma.no_weight_decay
    assert torch.allclose(crit.log_sigma.exp(), torch.ones(3))
    assert crit.means.std().item() == pytest.approx(math.sqrt(2 / 4), rel=0.7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lgm_finite_under_autocast(dtype):
    crit = LGMLoss(16, 5)
    with torch.autocast("cpu", dtype=dtype):
        loss, logits, _ = crit(torch.randn(8, 16) * 30, torch.randint(0, 5, (8,)))
    assert torch.isfinite(loss) and logits.dtype == torch.float32


# T5, the Caffe solver's STEPUP: α(t) = min(value · γ^⌊t/step⌋, max) = min(0.1 · 2^⌊t/5000⌋, 0.3)
T5 = {0: 0.1, 1: 0.1, 4999: 0.1, 5000: 0.2, 5001: 0.2, 9999: 0.2, 10000: 0.3, 20000: 0.3, 120000: 0.3}


def test_margin_schedule_stepup_t5_table():
    schedule = MarginSchedule("STEPUP", value=0.1, step=5000, gamma=2.0, max=0.3)
    for t, alpha in T5.items():
        assert alpha == pytest.approx(min(0.1 * 2 ** (t // 5000), 0.3))
        assert schedule(t) == pytest.approx(alpha)


def test_margin_schedule_addup_and_default_cap():
    addup = MarginSchedule("ADDUP", value=0.1, step=1000, gamma=0.05, max=0.3)
    assert [round(addup(t), 10) for t in (0, 999, 1000, 3999, 4000, 9000)] == [0.1, 0.1, 0.15, 0.25, 0.3, 0.3]
    # the default cap is the schema's, the Caffe CIFAR-100 example's 0.3: 0.5 · 4 clamped to 0.3
    assert MarginSchedule("STEPUP", value=0.5, step=10, gamma=4.0)(10) == 0.3
    assert MarginSchedule("CONSTANT", value=0.7)(10**9) == 0.7
    assert MarginSchedule("STEPUP", value=2.0, step=10, gamma=2.0)(0) == 2.0  # the initial value is never clamped
    with pytest.raises(ValueError, match="STEPDOWN is not valid; choose one of CONSTANT, STEPUP, ADDUP"):
        resolved("loss=lgm", "loss.margin.policy=STEPDOWN")  # the schema holds the choices


def large_margin_reference(z, y, reg_lambda=0.3, deg_logit=0.0):
    """(CE, R, CE + λR) for one sample: CE of z − δ·e_y; R over the non-target softmax q (see top).
    E.g. z = (2, 1, 0), y = 0: CE = log(e² + e + 1) − 2 = 0.4076; q = softmax(1, 0) = (0.731, 0.269),
    R = ½ · 0.231 · (log 0.731 − log 0.269) = ½ · 0.231 · 1 = ¼ tanh(½) = 0.1155."""
    shifted = [v - (deg_logit if j == y else 0.0) for j, v in enumerate(z)]
    ce = math.log(sum(math.exp(v) for v in shifted)) - shifted[y]
    others = [v for j, v in enumerate(z) if j != y]
    norm = sum(math.exp(v) for v in others)
    q = [math.exp(v) / norm for v in others]
    r = 0.5 * sum((qj - 1 / len(q)) * math.log(qj) for qj in q)
    return ce, r, ce + reg_lambda * r


def caffe_margin(schedule: MarginSchedule, t: int) -> float:
    """The Caffe solver's loop: every ``step`` iterations, v ← clamp(v·γ or v + γ, min, max)."""
    v = schedule.value
    for i in range(1, t + 1):
        if schedule.policy != "CONSTANT" and i % schedule.step == 0:
            grown = v * schedule.gamma if schedule.policy == "STEPUP" else v + schedule.gamma
            v = min(max(grown, schedule.min), schedule.max)
    return v


@pytest.mark.parametrize("policy", ["STEPUP", "ADDUP"])
@pytest.mark.parametrize("value", [0.0, 0.001, 0.1, 0.5, 2.0])  # below min, inside, above max
def test_margin_schedule_equals_the_caffe_loop_for_every_start_value(policy, value):
    """E.g. STEPUP from 0.001 with min 0.01, γ 2: Caffe gives 0.01, 0.02, 0.04 at k = 1, 2, 3, where
    clamp(0.001 · 2^k) would give 0.01, 0.01, 0.01."""
    for gamma, low, high in [(2.0, 0.01, 1.0), (0.5, 0.2, 0.3), (1.0, 0.0, 1.0), (10.0, 0.2, 0.3), (0.0, 0.05, 1.0)]:
        schedule = MarginSchedule(policy, value=value, step=10, gamma=gamma, min=low, max=high)
        for t in range(0, 120, 3):
            assert schedule(t) == pytest.approx(caffe_margin(schedule, t), abs=1e-12), (gamma, low, high, t)
    stepup = MarginSchedule("STEPUP", value=0.001, step=10, gamma=2.0, min=0.01, max=1.0)
    assert [stepup(10 * k) for k in (1, 2, 3)] == pytest.approx([0.01, 0.02, 0.04])


LM_TABLE = [
    ((2, 1, 0), 0, 0.4076059644, 0.1155292893, 0.4422647512),
    ((0, 1, 2), 0, 2.4076059644, 0.1155292893, 2.4422647512),
    ((3, 0, 0, 0), 0, 0.1392063142, 0.0, 0.1392063142),
    ((0, 0, 0, 0), 1, 1.3862943611, 0.0, 1.3862943611),
    ((1.5, -0.5), 0, 0.1269280110, 0.0, 0.1269280110),
    ((1, 2, 3, 4, 5), 2, 2.4519143959, 0.7943904795, 2.6902315398),
    ((2, 1, 0, -9, -9), 0, 0.4076281855, 2.4902063368, 1.1546900866),
]


@pytest.mark.parametrize("z,y,ce,r,total", LM_TABLE)
def test_large_margin_table(z, y, ce, r, total):
    assert large_margin_reference(z, y) == pytest.approx((ce, r, total), abs=1e-9)
    logits, target = torch.tensor([z], dtype=D64), torch.tensor([y])
    assert F.cross_entropy(logits, target).item() == pytest.approx(ce, abs=1e-9)
    assert large_margin_regularizer(logits, target).item() == pytest.approx(r, abs=1e-9)
    assert large_margin_loss(logits, target).item() == pytest.approx(total, abs=1e-9)


def test_large_margin_c3_closed_form_and_gradient():
    """C = 3: R = ¼ tanh(½ (z_j − z_k)) for the two non-target logits; the gradient is the central
    difference of the reference."""
    fd = central_difference(lambda z: large_margin_reference(z[0], 0)[2], [[2.0, 1.0, 0.0]])
    assert fd[0] == pytest.approx([-0.3347590442, 0.3088790478, 0.0258799964], abs=1e-8)
    logits = torch.tensor([[2.0, 1.0, 0.0]], dtype=D64, requires_grad=True)
    assert large_margin_regularizer(logits, torch.tensor([0])).item() == pytest.approx(0.25 * math.tanh(0.5), abs=1e-12)
    large_margin_loss(logits, torch.tensor([0])).backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.3347590442, 0.3088790478, 0.0258799964]], dtype=D64),
                               atol=1e-9, rtol=0)


def test_large_margin_deg_logit():
    """deg_logit δ = 1 lowers the target logit before CE: CE of (1, 1, 0); R is unchanged."""
    assert large_margin_reference([2.0, 1.0, 0.0], 0, deg_logit=1.0)[2] == pytest.approx(0.8966535909, abs=1e-9)
    fd = central_difference(lambda z: large_margin_reference(z[0], 0, deg_logit=1.0)[2], [[2.0, 1.0, 0.0]])
    assert fd[0] == pytest.approx([-0.5776812017, 0.4864693750, 0.0912118267], abs=1e-8)
    logits = torch.tensor([[2.0, 1.0, 0.0]], dtype=D64, requires_grad=True)
    loss = large_margin_loss(logits, torch.tensor([0]), deg_logit=1.0)
    assert loss.item() == pytest.approx(0.8966535909, abs=1e-9)
    loss.backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.5776812017, 0.4864693750, 0.0912118267]], dtype=D64),
                               atol=1e-9, rtol=0)


def test_large_margin_reductions_and_class_weights():
    """Rows (2, 1, 0, −9, −9) → 0 and (1, 2, 3, 4, 5) → 2 (table rows 7 and 6). Class weight 2 on
    class 0 weights CE as PyTorch does, Σ w_y CE / Σ w_y = (2 · 0.40763 + 2.45191) / 3; R stays an
    unweighted mean: 1.08906 + 0.3 · (2.49021 + 0.79439) / 2 = 1.5817464448."""
    (ce0, r0, t0), (ce1, r1, t1) = large_margin_reference([2, 1, 0, -9, -9], 0), large_margin_reference(
        [1, 2, 3, 4, 5], 2)
    assert (t0 + t1) / 2 == pytest.approx(1.9224608132, abs=1e-9)
    assert (2 * ce0 + ce1) / 3 + 0.3 * (r0 + r1) / 2 == pytest.approx(1.5817464448, abs=1e-9)
    logits = torch.tensor([[2, 1, 0, -9, -9], [1, 2, 3, 4, 5]], dtype=D64)
    y = torch.tensor([0, 2])
    assert large_margin_loss(logits, y).item() == pytest.approx(1.9224608132, abs=1e-9)
    assert large_margin_loss(logits, y, reduction="sum").item() == pytest.approx(3.8449216264, abs=1e-9)
    torch.testing.assert_close(large_margin_loss(logits, y, reduction="none"),
                               torch.tensor([1.1546900866, 2.6902315398], dtype=D64), atol=1e-9, rtol=0)
    w = torch.tensor([2.0, 1, 1, 1, 1], dtype=D64)
    assert large_margin_loss(logits, y, weight=w).item() == pytest.approx(1.5817464448, abs=1e-9)
    assert large_margin_loss(logits, y, reg_lambda=0.0, reduction="none")[1].item() == pytest.approx(2.4519143959)


def test_large_margin_honours_ignore_index():
    logits = torch.tensor([[2, 1, 0, -9, -9], [1, 2, 3, 4, 5]], dtype=D64)
    loss = large_margin_loss(logits, torch.tensor([0, -100]))
    assert loss.item() == pytest.approx(1.1546900866, abs=1e-9)  # the ignored row counts nowhere


def test_large_margin_refuses_one_class():
    with pytest.raises(ValueError, match="at least 2 classes"):
        LargeMarginLoss(4, 1)


def test_large_margin_finite_in_fp16_and_close_to_fp32_in_bf16():
    z = torch.tensor([[2.0, 1.0, 0.0, -3.0], [0.5, 4.0, -1.0, 2.0]])
    y = torch.tensor([0, 1])
    r16 = large_margin_regularizer(z.half(), y)
    assert torch.isfinite(r16).all()
    torch.testing.assert_close(r16, large_margin_regularizer(z, y), atol=1e-2, rtol=0)
    crit = LargeMarginLoss(8, 4)
    x = torch.randn(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = crit(x, y)[0]
    assert torch.isfinite(low) and low.item() == pytest.approx(crit(x, y)[0].item(), abs=1e-2)


def test_fused_squared_distances_gradcheck_and_agree_with_broadcast():
    from lgm_gcp.losses.lgm import SquaredDistances

    x = torch.randn(5, 4, dtype=D64, requires_grad=True)
    mu = torch.randn(3, 4, dtype=D64, requires_grad=True)
    for centre in (torch.zeros(4, dtype=D64), mu.detach().mean(0), torch.randn(4, dtype=D64) * 3):
        assert torch.autograd.gradcheck(lambda a, b, c=centre: SquaredDistances.apply(a, b, c), (x, mu))
        torch.testing.assert_close(SquaredDistances.apply(x, mu, centre), (x[:, None] - mu[None]).square().sum(-1))


def test_fused_large_margin_gradcheck_with_an_ignored_row_and_agrees_with_the_general_path():
    """The fused Function's hand-written backward against finite differences (float64), with one
    ignored target; and its value and gradient against the unfused path (all-ones class weights
    take it), which builds CE and R separately with autograd."""
    from lgm_gcp.losses.large_margin import FusedLargeMargin

    z = (torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 4).requires_grad_()
    y = torch.tensor([0, 4, -100, 2, 1, 3])
    assert torch.autograd.gradcheck(lambda t: FusedLargeMargin.apply(t, y, 0.3, -100), (z,))
    fused = large_margin_loss(z, y, 0.3)
    general = large_margin_loss(z, y, 0.3, weight=torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(fused, general, rtol=1e-12, atol=1e-12)
    g_fused, = torch.autograd.grad(fused, z)
    g_general, = torch.autograd.grad(general, z)
    torch.testing.assert_close(g_fused, g_general, rtol=1e-12, atol=1e-12)
    assert g_fused[2].abs().max() == 0  # the ignored row gets no gradient


def test_softmax_and_logsumexp_match_torch_with_masked_columns_and_large_shifts():
    """The fused losses' one-pass (softmax, log-sum-exp): against torch.softmax and torch.logsumexp in
    float64, with one −inf (masked) entry per row; and in float32 on logits shifted by 1000 with a
    spread of 50, against float64 on the same values (lse to 1e-7 relative)."""
    from lgm_gcp.losses.base import softmax_and_logsumexp

    gen = torch.Generator().manual_seed(2)
    z = torch.randn(8, 7, dtype=torch.float64, generator=gen) * 3
    z[torch.arange(8), torch.arange(8) % 7] = float("-inf")
    p, lse = softmax_and_logsumexp(z.clone())
    torch.testing.assert_close(p, torch.softmax(z, 1), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(lse, torch.logsumexp(z, 1), rtol=1e-14, atol=1e-14)
    assert (p[torch.arange(8), torch.arange(8) % 7] == 0).all()
    big = torch.randn(16, 1000, generator=gen) * 50 + 1000
    _, lse32 = softmax_and_logsumexp(big.clone())
    exact = torch.logsumexp(big.double(), 1)
    assert ((lse32.double() - exact).abs() / exact).max() < 1e-7


def test_fused_large_margin_float32_matches_float64_on_confident_shifted_logits():
    """The fused path takes L (the log-sum-exp over the non-target logits) from its one softmax as
    max z − log max q. On logits a trained network gives (spread 40, every row shifted by 500, the
    target ahead by 30 so that p_y rounds to 1 in float32) the float32 loss and gradient agree with
    float64 evaluated on the same values: the loss to 1e-6 relative; the gradient to 1e-3 of its largest
    entry, because its q_j (z_j − q·z) subtracts values near 500 in float32 (the pre-fusion code
    measured 1.1e-4 here, the same as the fused one)."""
    gen = torch.Generator().manual_seed(5)
    y = torch.arange(64) % 100
    z = torch.randn(64, 100, generator=gen, dtype=torch.float64) * 40 + 500
    z[torch.arange(64), y] = z.max(1).values + 30
    z32 = z.float()
    results = []
    for t in (z32.clone().requires_grad_(), z32.double().requires_grad_()):
        loss = large_margin_loss(t, y, 0.3)
        loss.backward()
        results.append((loss.detach().double(), t.grad.double()))
    (l32, g32), (l64, g64) = results
    assert abs(l32 - l64) / l64 < 1e-6
    assert ((g32 - g64).abs().max() / g64.abs().max()).item() < 1e-3


@pytest.mark.parametrize("form", ["half", "full"])
def test_fused_lgm_equals_the_general_path_and_passes_gradcheck(form, monkeypatch):
    """The fused Function (one frozen σ for all classes) against the general path (distances, logits,
    margin scatter, CE and the likelihood term composed with autograd), in float64 with σ = 1.3,
    α = 0.7, λ = 0.2: the same loss, logits, logs and gradients; and gradcheck on the Function."""
    from lgm_gcp.losses.lgm import FusedLGM

    torch.manual_seed(0)
    crit = LGMLoss(6, 4, margin={"policy": "CONSTANT", "value": 0.7}, likelihood_weight=0.2, likelihood_form=form,
                   sigma_init=1.3).double()
    assert crit._shared_sigma() == pytest.approx(1.3)
    x = (torch.randn(9, 6, dtype=torch.float64) + 2.0).requires_grad_()
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 3])

    def run_path():
        x.grad = crit.means.grad = None
        loss, logits, logs = crit(x, y)
        loss.backward()
        return loss.detach(), logits.detach(), logs, x.grad.clone(), crit.means.grad.clone()

    fused = run_path()
    monkeypatch.setattr(LGMLoss, "_shared_sigma", lambda self: None)
    general = run_path()
    for a, b in zip(fused[:2] + fused[3:], general[:2] + general[3:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for key in ("ce", "likelihood"):
        torch.testing.assert_close(fused[2][key], general[2][key], rtol=1e-12, atol=1e-12)
    k = 1.0 if form == "half" else 2.0
    assert torch.autograd.gradcheck(lambda xx, mm: FusedLGM.apply(xx, mm, y, 1.3, 0.7, 0.2 * k)[0],
                                    (x.detach().requires_grad_(), crit.means.detach().clone().requires_grad_()))


def test_fused_lgm_stays_accurate_where_the_cross_entropy_matters():
    """Means sharing an offset of 10 (D = 4096, 10 classes, spread 0.02) and features 0.02 from their
    means: ‖x‖² ≈ 4e5 while the class distances differ by ~3, so CE ≈ 1.3 rests on logit differences
    of order 1. Uncentred, float32 logits x·μ − ½‖μ‖² ≈ 2e5 carry errors of ~0.01 (measured: loss off
    by 1.3e-3 relative, gradients by 3–4 % of their largest entry); centred on the batch's mean feature
    they match float64 to 6e-7 (loss) and 3e-5 (gradients), the same as centring on the mean of the means."""
    torch.manual_seed(0)
    d, classes = 4096, 10
    crit = LGMLoss(d, classes, margin={"policy": "CONSTANT", "value": 0.5})
    with torch.no_grad():
        crit.means.copy_(10.0 + 0.02 * torch.randn(classes, d))
    y = torch.arange(32) % classes
    x = crit.means.detach()[y] + 0.02 * torch.randn(32, d)
    results = []
    for dtype in (torch.float32, torch.float64):
        c = crit.to(dtype)
        xx = x.detach().clone().to(dtype).requires_grad_()
        loss, _, logs = c(xx, y)
        loss.backward()
        results.append((loss.detach().double(), logs["ce"].double(), xx.grad.double(), c.means.grad.double()))
        c.zero_grad()
    (l32, ce32, gx32, gm32), (l64, ce64, gx64, gm64) = results
    assert ce64 > 0.5  # the cross-entropy is not negligible here
    assert abs(l32 - l64) / l64 < 1e-5 and abs(ce32 - ce64) / ce64 < 1e-5
    assert ((gx32 - gx64).abs().max() / gx64.abs().max()).item() < 2e-4
    assert ((gm32 - gm64).abs().max() / gm64.abs().max()).item() < 2e-4


def test_fused_lgm_loss_and_gradients_stay_accurate_on_trained_like_features():
    """The same trained-like GCP-sized features as the logits test (D = 32,896, features near means
    that share a large positive offset): the float32 loss and feature gradient against float64."""
    crit, x, y = trained_like_lgm()
    results = []
    for dtype in (torch.float32, torch.float64):
        c = crit.to(dtype)
        xx = x.detach().to(dtype).requires_grad_()
        loss = c(xx, y, step=6000)[0]
        loss.backward()
        results.append((loss.detach().double(), xx.grad.double()))
        c.zero_grad()
    (l32, g32), (l64, g64) = results
    assert abs(l32 - l64) / abs(l64) < 1e-5
    assert ((g32 - g64).abs().max() / g64.abs().max()).item() < 1e-4
