"""Float64 parity with the reference computations (tests/references.py), forward and backward, on
random inputs: the iSQRT-COV meta-layer against fast-MPN-COV's, the 3G head against 3G-Net's, the
L-GM loss against the Caffe ClassDistance layer, the large-margin loss against its reference class.
Where lgm-gcp differs on purpose, the test states the relation and the option that restores the
reference's behaviour.
"""

import pytest
import torch

from lgm_gcp.losses.large_margin import large_margin_loss
from lgm_gcp.losses.lgm import LGMLoss
from lgm_gcp.models.heads.covariance import CovarianceSqrt
from lgm_gcp.models.heads.three_g import ThreeGHead

from references import caffe_class_distance, fast_mpn_cov, large_margin_in_softmax, three_g_net

TOL = dict(rtol=1e-12, atol=1e-12)


def value_and_grads(fn, *inputs, seed=0):
    """fn(*inputs) and the gradients of ⟨fn(*inputs), G⟩ for a fixed random G."""
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    upstream = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    grads = torch.autograd.grad((out * upstream).sum(), inputs)
    return out.detach(), grads


@pytest.mark.parametrize("algorithm", ["matmul", "spectral"])
@pytest.mark.parametrize("shape", [(3, 8, 4, 4), (2, 12, 3, 3)], ids=["full_rank", "rank_deficient_M9_d12"])
def test_isqrt_cov_equals_fast_mpn_cov_forward_and_backward(algorithm, shape):
    maps = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).relu()
    ours = CovarianceSqrt(iterations=5, vec_order="row", algorithm=algorithm)
    out, (grad,) = value_and_grads(ours, maps)
    ref_out, (ref_grad,) = value_and_grads(fast_mpn_cov, maps)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)


class PooledVector(torch.nn.Module):
    """The head up to its pooled vector (its classifier left out)."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, maps):
        return self.head._pool(maps)


def test_three_g_head_equals_three_g_net_forward_and_backward():
    torch.manual_seed(0)
    head = ThreeGHead(in_channels=16, dim=8, blocks=3, algorithm="matmul").double().train()
    maps = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    names = [n for n, _ in head.named_parameters() if not n.startswith("classifier")]
    params = [p for n, p in head.named_parameters() if not n.startswith("classifier")]

    def ours(x, *ps):
        return torch.func.functional_call(PooledVector(head), {f"head.{n}": p for n, p in zip(names, ps)}, (x,))

    def reference(x, *ps):
        return three_g_net(x, dict(zip(names, ps)), blocks=3, iterations=5)

    out, grads = value_and_grads(ours, maps, *params)
    ref_out, ref_grads = value_and_grads(reference, maps, *params)
    torch.testing.assert_close(out, ref_out, **TOL)
    for name, g, ref_g in zip(["maps", *names], grads, ref_grads):
        torch.testing.assert_close(g, ref_g, **TOL, msg=lambda m, name=name: f"{name}: {m}")


def caffe_lgm(num_classes=5, dim=7, sigma_init=1.3):
    return LGMLoss(dim, num_classes, margin={"policy": "CONSTANT", "value": 0.3}, likelihood_weight=0.1,
                   update_sigma=True, sigma_init=sigma_init, sigma_param="raw", sigma_offset=1e-4).double()


def test_lgm_with_the_caffe_options_equals_the_caffe_layer_forward_and_backward():
    """sigma_param=raw and sigma_offset=1e-4 give the Caffe layer's logits, CE, and its feature and
    mean gradients (the likelihood's λ term included). Caffe's σ gradient divides by (σ + 1e-4)·σ where
    the derivative of −½ s/(σ + 1e-4) has (σ + 1e-4)²: lgm-gcp's autograd σ gradient is the exact one,
    Caffe's × σ/(σ + 1e-4)."""
    torch.manual_seed(0)
    loss = caffe_lgm()
    with torch.no_grad():
        loss.sigma.copy_(torch.tensor([1.3, 0.7, 2.0, 1.0, 0.4], dtype=torch.float64))
    x = torch.randn(9, 7, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3])
    total, logits, logs = loss(x, y)
    total.backward()
    ce, z, grad_x, grad_mu, grad_sigma = caffe_class_distance(x.detach(), loss.means.detach(), loss.sigma.detach(),
                                                             y, alpha=0.3, lam=0.1)
    torch.testing.assert_close(logits, z, **TOL)
    torch.testing.assert_close(logs["ce"], ce, **TOL)
    torch.testing.assert_close(x.grad, grad_x, **TOL)
    torch.testing.assert_close(loss.means.grad, grad_mu, **TOL)
    sigma = loss.sigma.detach()
    torch.testing.assert_close(loss.sigma.grad, grad_sigma * sigma / (sigma + 1e-4), **TOL)


def test_lgm_defaults_differ_from_caffe_only_by_the_documented_offset_and_parametrisation():
    """The default (log σ, no offset) gives logits −½ s/σ, Caffe's −½ s/(σ + 1e-4) rescaled by
    (σ + 1e-4)/σ, and a log σ gradient σ times the raw one."""
    torch.manual_seed(0)
    caffe = caffe_lgm()
    ours = LGMLoss(7, 5, margin={"policy": "CONSTANT", "value": 0.3}, update_sigma=True, sigma_init=1.3).double()
    with torch.no_grad():
        ours.means.copy_(caffe.means)
        ours.log_sigma.copy_(caffe.sigma.log())  # the same σ in both parametrisations
    x = torch.randn(9, 7, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3])
    _, z, *_ = caffe_class_distance(x, caffe.means.detach(), caffe.sigma.detach(), y, alpha=0.3, lam=0.1)
    sigma = caffe.sigma.detach()
    torch.testing.assert_close(ours.logits(x), z * (sigma + 1e-4) / sigma, **TOL)
    no_offset = LGMLoss(7, 5, margin={"policy": "CONSTANT", "value": 0.3}, update_sigma=True, sigma_init=1.3,
                        sigma_param="raw").double()
    with torch.no_grad():
        no_offset.means.copy_(caffe.means)
        no_offset.sigma.copy_(caffe.sigma)
    ours(x, y)[0].backward()
    no_offset(x, y)[0].backward()
    torch.testing.assert_close(ours.log_sigma.grad, sigma * no_offset.sigma.grad, **TOL)


@pytest.mark.parametrize("deg_logit", [None, 1.0])
def test_large_margin_equals_the_reference_forward_and_backward(deg_logit):
    z = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    out, (grad,) = value_and_grads(lambda t: large_margin_loss(t, y, 0.3, deg_logit=deg_logit), z)
    ref_out, (ref_grad,) = value_and_grads(lambda t: large_margin_in_softmax(t, y, 0.3, deg_logit), z)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)
