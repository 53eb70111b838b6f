"""L-GM and large-margin losses against the spec's hand-computed values (losses.md 3), float64."""

import math

import pytest
import torch
import torch.nn.functional as F

from lgm_gcp.losses.large_margin import LargeMarginLoss, large_margin_loss, large_margin_regularizer
from lgm_gcp.losses.lgm import LGMLoss
from lgm_gcp.schedules.margin import MarginSchedule

D64 = torch.float64
MU = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=D64)


def lgm(alpha=0.0, lam=0.0, **kw):
    loss = LGMLoss(2, 3, margin={"policy": "CONSTANT", "value": alpha}, likelihood_weight=lam, **kw).double()
    with torch.no_grad():
        loss.means.copy_(MU)
    return loss


@pytest.mark.parametrize("alpha,ce", [(0.0, 0.7586236757), (0.1, 0.7855190331), (1.0, 1.0549569196)])
def test_lgm_t1_cross_entropy_per_margin(alpha, ce):
    x, y = torch.tensor([[1.0, 0.0]], dtype=D64), torch.tensor([0])
    loss, logits, logs = lgm(alpha)(x, y)
    torch.testing.assert_close(logits, torch.tensor([[-0.5, -0.5, -2.5]], dtype=D64))
    assert loss.item() == pytest.approx(ce, abs=1e-9) and logs["ce"].item() == pytest.approx(ce, abs=1e-9)


def test_lgm_t1_total_and_gradients():
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


def test_lgm_t3_paper_form_with_log_det():
    loss, logits, logs = _t3(True, "paper")
    torch.testing.assert_close(logits, torch.tensor([[-1.3181471806, -1.8068528194]], dtype=D64), atol=1e-9, rtol=0)
    assert logs["ce"].item() == pytest.approx(0.6089204040, abs=1e-9)
    assert logs["likelihood"].item() == pytest.approx(1.3181471806, abs=1e-9)
    assert loss.item() == pytest.approx(0.7407351221, abs=1e-9)


def test_lgm_t3_caffe_diagonal_form():
    loss, _, logs = _t3(False, "half")
    assert logs["ce"].item() == pytest.approx(0.1902991404, abs=1e-9) and logs["likelihood"].item() == 1.0
    assert loss.item() == pytest.approx(0.2902991404, abs=1e-9)


def test_lgm_unit_sigma_equals_linear_layer_with_bias():
    crit = lgm()
    x = torch.randn(5, 2, dtype=D64)
    linear = x @ MU.T - 0.5 * MU.square().sum(1)
    torch.testing.assert_close(F.softmax(crit.logits(x), 1), F.softmax(linear, 1))
    t1 = F.softmax(crit.logits(torch.tensor([[1.0, 0.0]], dtype=D64)), 1)
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


T5 = {0: 0.1, 1: 0.1, 4999: 0.1, 5000: 0.2, 5001: 0.2, 9999: 0.2, 10000: 0.3, 20000: 0.3, 120000: 0.3}


def test_margin_schedule_stepup_t5_table():
    schedule = MarginSchedule("STEPUP", value=0.1, step=5000, gamma=2.0, max=0.3)
    for t, alpha in T5.items():
        assert schedule(t) == pytest.approx(alpha)


def test_margin_schedule_addup_and_default_cap():
    addup = MarginSchedule("ADDUP", value=0.1, step=1000, gamma=0.05, max=0.3)
    assert [round(addup(t), 10) for t in (0, 999, 1000, 3999, 4000, 9000)] == [0.1, 0.1, 0.15, 0.25, 0.3, 0.3]
    assert MarginSchedule("STEPUP", value=0.5, step=10, gamma=4.0)(10) == 1.0  # default max = 1
    assert MarginSchedule("CONSTANT", value=0.7)(10**9) == 0.7
    assert MarginSchedule("STEPUP", value=2.0, step=10, gamma=2.0)(0) == 2.0  # the initial value is never clamped
    with pytest.raises(ValueError, match="STEPDOWN.*CONSTANT, STEPUP, ADDUP"):
        MarginSchedule("STEPDOWN")


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
    logits, target = torch.tensor([z], dtype=D64), torch.tensor([y])
    assert F.cross_entropy(logits, target).item() == pytest.approx(ce, abs=1e-9)
    assert large_margin_regularizer(logits, target).item() == pytest.approx(r, abs=1e-9)
    assert large_margin_loss(logits, target).item() == pytest.approx(total, abs=1e-9)


def test_large_margin_c3_closed_form_and_gradient():
    logits = torch.tensor([[2.0, 1.0, 0.0]], dtype=D64, requires_grad=True)
    assert large_margin_regularizer(logits, torch.tensor([0])).item() == pytest.approx(0.25 * math.tanh(0.5), abs=1e-12)
    large_margin_loss(logits, torch.tensor([0])).backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.3347590442, 0.3088790478, 0.0258799964]], dtype=D64),
                               atol=1e-9, rtol=0)


def test_large_margin_deg_logit():
    logits = torch.tensor([[2.0, 1.0, 0.0]], dtype=D64, requires_grad=True)
    loss = large_margin_loss(logits, torch.tensor([0]), deg_logit=1.0)
    assert loss.item() == pytest.approx(0.8966535909, abs=1e-9)
    loss.backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.5776812017, 0.4864693750, 0.0912118267]], dtype=D64),
                               atol=1e-9, rtol=0)


def test_large_margin_reductions_and_class_weights():
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


@pytest.mark.parametrize("loss", ["softmax", "lgm", "large_margin"])
@pytest.mark.parametrize("head", ["gap", "gcp", "3g"])
def test_every_loss_composes_with_every_head(loss, head):
    from lgm_gcp.models.build import build_model

    from conftest import resolved

    extra = [] if head == "gap" else ["head.dim=8"]
    model = build_model(resolved(f"loss={loss}", f"head={head}", *extra), 10, 1)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    total, logits, logs = model(x, y, step=0)
    total.backward()
    assert logits.shape == (4, 10) and torch.isfinite(total)
    assert all(p.grad is not None for p in model.criterion.parameters() if p.requires_grad)


def test_fused_squared_distances_gradcheck_and_agree_with_broadcast():
    from lgm_gcp.losses.lgm import SquaredDistances

    x = torch.randn(5, 4, dtype=D64, requires_grad=True)
    mu = torch.randn(3, 4, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(SquaredDistances.apply, (x, mu))
    torch.testing.assert_close(SquaredDistances.apply(x, mu), (x[:, None] - mu[None]).square().sum(-1))
