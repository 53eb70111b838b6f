"""L-GM loss (Wan et al., "Rethinking Feature Distribution for Loss Functions in Image
Classification", CVPR 2018): a Gaussian-mixture classifier with a margin and a likelihood term.

features x (B, D), class means μ (C, D), variances σ (C,) isotropic or (C, D) diagonal.
  d_k(x)   = ½ Σ_d (x_d − μ_kd)² / σ_k(d)                     (B, C)
  logits   z_k = −d_k  [− ½ log|Σ_k| with ``log_det``]       prediction: argmax (nearest mean at σ = 1)
  training z_y ← z_y − α·d_y, i.e. the target distance × (1 + α); α from the margin schedule
  loss     = CE(margin logits, y) + λ · mean_i L_lkd,i
  L_lkd    half:  ½‖x_i − μ_y‖²  (the Caffe/TF reference: not divided by σ, no log-det; default)
           full:  ‖x_i − μ_y‖²   (the authors' later PyTorch code)
           paper: d_y(x_i) + ½ log|Σ_y|  (the paper's Σ-scaled form)
Distances use ‖x‖² − 2 x μᵀ + ‖μ‖² around a centre among the features (the mean of the means; the fused
training path takes the batch's mean feature, a cheaper pass) and are clamped at 0, never a (B, C, D)
tensor, in float32 even under autocast. In the reference setting (isotropic, one frozen σ for every
class, no log-det) the whole training loss is one Function, ``FusedLGM``, costing 1.1–1.25× a Linear +
CE (benchmarks/bench_losses.py); otherwise ``SquaredDistances`` fuses the distances' backward into
the two matmuls a Linear layer needs plus one pass over μ, and the likelihood term is a gather from
the same distances.
σ = exp(log σ) is positive by construction; ``update_sigma=false`` freezes it at
``sigma_init`` (the reference setting, under which L-GM equals a linear layer with weights μ and
biases −½‖μ‖²). Two deliberate differences from the Caffe layer, each with an option that restores it:
  * the isotropic divisor is σ, not Caffe's max(σ, 0) + 1e-4 (``sigma_offset=1e-4``);
  * the learned parameter is log σ, where Caffe learns σ itself and clamps it (``sigma_param=raw``:
    max(σ, 0) + sigma_offset isotropic, max(σ, 1e-8) diagonal); the values are the same, the SGD steps
    differ (∂L/∂log σ = σ ∂L/∂σ).
"""

from __future__ import annotations

import math
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lgm_gcp.losses.base import softmax_and_logsumexp
from lgm_gcp.options.fields import NonNeg, Positive
from lgm_gcp.schedules.margin import MarginSchedule

FORMS = ("half", "full", "paper")


class SquaredDistances(torch.autograd.Function):
    """s_ik = max(‖x_i − μ_k‖², 0): (B, D), (C, D), centre c (D,) -> (B, C), expanded around c:

      s = ‖x̄‖² − 2 x̄·μ + 2 x̄·c + ‖μ − c‖²,   x̄ = x − c,

    the same value for any c, but with c near the features (the mean of the means) nothing large
    cancels in float32. ‖μ − c‖ comes from cdist's direct path, which makes no (C, D) temporary.
    The shift drops out of the gradients, which are a Linear layer's two matmuls plus one pass:
    with G = ∂L/∂s masked where the clamp was active, ∂L/∂x = 2 (x ⊙ rowsum(G) − G μ),
    ∂L/∂μ = 2 (μ ⊙ colsum(G) − Gᵀ x); c gets none.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, mu: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        xc = x - centre
        mu_norm = torch.cdist(mu[None], centre[None, None], compute_mode="donot_use_mm_for_euclid_dist")[0, :, 0]
        sq = torch.addmm(xc.square().sum(1, keepdim=True), xc, mu.T, alpha=-2.0)
        sq.add_((2.0 * (xc @ centre))[:, None]).add_(mu_norm.square())
        sq.clamp_min_(0.0)
        ctx.save_for_backward(x, mu, sq)
        return sq

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, mu, sq = ctx.saved_tensors
        g = grad * (sq > 0)
        grad_x = grad_mu = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addmm(x * g.sum(1, keepdim=True), g, mu, alpha=-1.0).mul_(2.0)
        if ctx.needs_input_grad[1]:
            grad_mu = torch.addmm(mu * g.sum(0)[:, None], g.T, x, alpha=-1.0).mul_(2.0)
        return grad_x, grad_mu, None


class FusedLGM(torch.autograd.Function):
    """The training loss in its reference setting (isotropic, one frozen σ for every class, no log-det),
    every (B, C) pass shared. With c the batch's mean feature (detached; it sits
    among the features, as the means do, and costs a (B, D) pass where the mean of the means costs a
    (C, D) one), x̄ = x − c, μ̄ = μ − c, v_i = x_i − μ_{y_i}, d_y = ½‖v‖²/σ and r_i = ½‖x̄_i‖²/σ:

      s_ik = (x̄_i·μ̄_k − ½‖μ̄_k‖²)/σ = −d_ik + r_i         (the logits up to a per-row shift)
      t_i  = r_i − (1 + α) d_y                             (the target's margin logit, same shift)
      CE_i = logsumexp(s_i with s_iy := t_i) − t_i         (shift-invariant, so exact)
      loss = mean_i CE_i + λ k mean_i ½‖v_i‖²              (k = 1 half, 2 full)

    d_y comes from x − μ_y directly (exact); s is centred, so nothing large cancels in float32. One
    softmax gives P and the log-sum-exp (max s − log max P). With P's target column zeroed (its rows
    then sum to 1 − p_y, which cancels every c term), the backward is two matmuls and three passes:
      ∂/∂x = [P μ + (p_y − 1)(x − (1+α) v)]/(σB) + λ k v/B
      ∂/∂μ = [Pᵀ x − colsum(P) μ]/(σB) + Σ_{i: y_i = k} [(p_y − 1)(1+α) v_i/(σB) − λ k v_i/B]
    Returns (loss, margin-free logits −d, CE, mean ½‖v‖²); only the loss carries a gradient.
    """

    @staticmethod
    def forward(ctx, x, mu, targets, sigma: float, alpha: float, lam_k: float):
        b = x.shape[0]
        centre = x.sum(0).div_(b)
        xc = x - centre
        mc_sq = torch.linalg.vector_norm(mu - centre, dim=1).square_()  # measured faster than cdist's direct path
        # x̄·μ_k differs from x̄·μ̄_k by x̄·c, a per-row constant: folded into the shift r, so the matmul
        # takes μ itself
        s = torch.addmm(mc_sq, xc, mu.T, beta=-0.5 / sigma, alpha=1.0 / sigma)
        y = targets[:, None]
        v = x - mu.index_select(0, targets)
        sq_y = torch.linalg.vecdot(v, v)
        r = torch.linalg.vecdot(xc, torch.add(centre, xc, alpha=0.5)).div_(sigma)  # (½‖x̄‖² + x̄·c)/σ
        t = torch.add(r, sq_y, alpha=-0.5 * (1.0 + alpha) / sigma)
        logits = s - r[:, None]
        p, lse = softmax_and_logsumexp(s.scatter_(1, y, t[:, None]))
        ce = lse.sub_(t).sum().div_(b)
        ctx.save_for_backward(p, targets, x, mu, v)
        ctx.sigma, ctx.alpha, ctx.lam_k = sigma, alpha, lam_k
        half_lik = sq_y.sum().mul_(0.5 / b)
        ce_out, lik_out = ce.detach(), half_lik.detach()
        ctx.mark_non_differentiable(logits, ce_out, lik_out)
        return ce + lam_k * half_lik, logits, ce_out, lik_out

    @staticmethod
    def backward(ctx, grad, _grad_logits, _grad_ce, _grad_lik):
        p, targets, x, mu, v = ctx.saved_tensors
        b = p.shape[0]
        y = targets[:, None]
        scale = grad / (ctx.sigma * b)
        x_coef = (p.gather(1, y) - 1.0).mul_(scale)  # (p_y − 1)/(σB), (B, 1)
        v_coef = torch.sub(grad * (ctx.lam_k / b), x_coef, alpha=1.0 + ctx.alpha)  # λk/B − (1+α)(p_y − 1)/(σB)
        p = torch.mul(p, scale).scatter_(1, y, 0.0)  # P/(σB), a copy: a second backward finds p intact
        grad_x = grad_mu = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(p, mu).addcmul_(x, x_coef).addcmul_(v, v_coef)
        if ctx.needs_input_grad[1]:
            grad_mu = torch.mm(p.T, x).addcmul_(mu, p.sum(0)[:, None], value=-1.0)
            grad_mu.index_add_(0, targets, v * v_coef, alpha=-1.0)
        return grad_x, grad_mu, None, None, None, None


DEFAULT_MARGIN = MarginSchedule()  # frozen: one instance serves every default

class LGMLoss(nn.Module):
    """``likelihood_form``: half (Caffe/TF: ½‖x-μ‖²) | full (TPAMI: ‖x-μ‖²) | paper (Σ-scaled + ½log|Σ|).
    ``means_init``: msra (the Caffe CIFAR example) | xavier (the Caffe MNIST one); ``means_lr_mult``: the
    Caffe CIFAR-100 example uses 2; ``means_weight_decay``: the references decay the means (σ never is).
    ``sigma_param``: the learned variance parameter, log or raw (Caffe's clamped σ); ``sigma_offset`` is
    added to the isotropic σ (the Caffe layer adds 1e-4). The defaults are the Caffe CIFAR-100 example's."""

    def __init__(self, in_features: int, num_classes: int, margin: MarginSchedule | Mapping = DEFAULT_MARGIN,
                 likelihood_weight: NonNeg = 0.1, likelihood_form: Literal["half", "full", "paper"] = "half",
                 covariance: Literal["isotropic", "diagonal"] = "isotropic", log_det: bool = False,
                 update_sigma: bool = False, sigma_init: Positive = 1.0, means_init: Literal["msra", "xavier"] = "msra",
                 means_weight_decay: bool = True, means_lr_mult: NonNeg = 1.0,
                 sigma_param: Literal["log", "raw"] = "log", sigma_offset: NonNeg = 0.0):
        super().__init__()
        self.num_classes, self.in_features = num_classes, in_features
        self.margin = margin if isinstance(margin, MarginSchedule) else MarginSchedule(**margin)
        self.likelihood_weight, self.likelihood_form, self.log_det = likelihood_weight, likelihood_form, log_det
        self.means = nn.Parameter(torch.empty(num_classes, in_features))
        if means_init == "msra":
            nn.init.normal_(self.means, 0.0, math.sqrt(2.0 / in_features))
        else:  # xavier
            bound = math.sqrt(3.0 / in_features)
            nn.init.uniform_(self.means, -bound, bound)
        shape = (num_classes,) if covariance == "isotropic" else (num_classes, in_features)
        self.sigma_param, self.sigma_offset = sigma_param, sigma_offset
        if sigma_param == "log":
            self.log_sigma = nn.Parameter(torch.full(shape, math.log(sigma_init)), requires_grad=update_sigma)
        else:
            self.sigma = nn.Parameter(torch.full(shape, float(sigma_init)), requires_grad=update_sigma)
        self._sigma_tensor().no_weight_decay = True
        if not means_weight_decay:
            self.means.no_weight_decay = True
        self.lr_mult = means_lr_mult

    def _sigma_tensor(self) -> nn.Parameter:
        return self.log_sigma if self.sigma_param == "log" else self.sigma

    def variances(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """σ as the distances divide by it: (C,) isotropic (+ ``sigma_offset``) or (C, D) diagonal."""
        if self.sigma_param == "log":
            sigma = self.log_sigma.to(dtype).exp()
            return sigma + self.sigma_offset if sigma.dim() == 1 else sigma
        sigma = self.sigma.to(dtype)
        return sigma.clamp_min(0.0) + self.sigma_offset if sigma.dim() == 1 else sigma.clamp_min(1e-8)

    def _operands(self, x: torch.Tensor) -> tuple:
        """(x, μ, c) in float32 or float64, c the mean of the means. Distances do not change under a
        common shift, but ‖x‖² − 2x·μ + ‖μ‖² cancels badly when features sit near their means far
        from the origin (a trained model's normal state); expanded around c they do not."""
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        mu = self.means.to(x.dtype)
        return x, mu, mu.detach().mean(0)

    def squared_distances(self, x: torch.Tensor) -> torch.Tensor:
        """‖x_i − μ_k‖², shape (B, C), in float32 or float64."""
        return SquaredDistances.apply(*self._operands(x))

    def half_distances(self, x: torch.Tensor, sq: torch.Tensor | None = None) -> torch.Tensor:
        """d_k(x) = ½ Σ_d (x_d − μ_kd)²/σ_k(d), shape (B, C), float32 or float64."""
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        sigma = self.variances(x.dtype)
        if sigma.dim() == 1:
            sq = self.squared_distances(x) if sq is None else sq
            return 0.5 * sq / sigma
        x, mu, centre = self._operands(x)
        x, mu = x - centre, mu - centre
        inv = sigma.reciprocal()  # (C, D)
        sq = x.square() @ inv.T - 2.0 * x @ (mu * inv).T + (mu.square() * inv).sum(1)
        return 0.5 * sq.clamp_min(0.0)

    def log_dets(self) -> torch.Tensor:
        """log|Σ_k|, shape (C,)."""
        ls = self.log_sigma if self.sigma_param == "log" and not self.sigma_offset else self.variances().log()
        return ls * self.in_features if ls.dim() == 1 else ls.sum(1)

    def _logits(self, d: torch.Tensor) -> torch.Tensor:
        return -d - 0.5 * self.log_dets().to(d.dtype) if self.log_det else -d

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return self._logits(self.half_distances(features))

    def _shared_sigma(self) -> float | None:
        """The one frozen variance of every class, when the fused path applies (isotropic, σ not
        learned, all classes equal, no log-det, half or full likelihood); None otherwise."""
        param = self._sigma_tensor()
        if param.requires_grad or param.dim() != 1 or self.log_det or self.likelihood_form == "paper":
            return None
        key = (param._version, param.data_ptr())  # a load_state_dict or an edit changes the version
        if getattr(self, "_sigma_cache", (None,))[0] != key:
            sigma = self.variances(torch.float64)
            shared = float(sigma[0]) if bool((sigma == sigma[0]).all()) else None
            self._sigma_cache = (key, shared)
        return self._sigma_cache[1]

    def forward(self, features: torch.Tensor, targets: torch.Tensor, step: int = 0):
        alpha = self.margin(step)
        sigma = self._shared_sigma()
        if sigma is not None:
            with torch.autocast(features.device.type, enabled=False):
                x = features if features.dtype in (torch.float32, torch.float64) else features.float()
                k = 1.0 if self.likelihood_form == "half" else 2.0
                loss, logits, ce, half_lik = FusedLGM.apply(x, self.means.to(x.dtype), targets, sigma, alpha,
                                                            self.likelihood_weight * k)
            return loss, logits, {"alpha": alpha, "ce": ce, "likelihood": k * half_lik}
        with torch.autocast(features.device.type, enabled=False):
            sq = self.squared_distances(features)  # ‖x − μ_k‖², shared by the logits and the likelihood
            d = self.half_distances(features, sq)
            logits = self._logits(d)
            target_d = d.gather(1, targets[:, None])
            margin_logits = logits.scatter_add(1, targets[:, None], -alpha * target_d)
            ce = F.cross_entropy(margin_logits, targets)
            if self.likelihood_form == "paper":
                likelihood = target_d.squeeze(1) + 0.5 * self.log_dets().to(d.dtype)[targets]
            else:
                target_sq = sq.gather(1, targets[:, None]).squeeze(1)
                likelihood = 0.5 * target_sq if self.likelihood_form == "half" else target_sq
            likelihood = likelihood.mean()
            loss = ce + self.likelihood_weight * likelihood
        logs = {"alpha": alpha, "ce": ce.detach(), "likelihood": likelihood.detach()}
        return loss, logits, logs
