"""Large-margin in softmax cross-entropy (Kobayashi, BMVC 2019).

logits z (N, C), targets y (N,); q = softmax over the C − 1 non-target logits.
  R_i  = ½ Σ_{j≠y_i} (q_j − 1/(C−1)) log q_j   (= ½[KL(q‖u) + KL(u‖q)] ≥ 0, u uniform)
  loss = CE(z − δ·e_y, y) + reg_lambda · R       (δ = ``deg_logit``, off by default)
CE keeps its class weights, label smoothing and ``ignore_index``; R is an unweighted mean over
the non-ignored samples. Differences from the reference, on purpose: ignored samples are left out
of R (the reference indexes column −100), the target column is removed by a select instead of
subtracting 10⁶ (finite in fp16), C < 2 is refused at construction, label smoothing reaches CE.
R is computed in float32 (or float64). Works on the logits of any head.

The usual case (mean reduction, no class weights, no label smoothing) runs as one autograd Function,
``FusedLargeMargin``, that shares every (N, C) pass between CE and R. With q the non-target softmax,
L = log Σ_{j≠y} e^{z_j} and p_y = σ(z_y − L), the log q_j = z_j − L terms of R cancel:
  CE_i = softplus(L − z_y),   R_i = ½ [q·z − Σ_{j≠y} z_j / (C−1)]
  ∂/∂z_j = (1 − p_y) q_j + ½λ [q_j (z_j − q·z + 1) − 1/(C−1)]  (j ≠ y),   ∂/∂z_y = −(1 − p_y)
(Σ_j (q_j − 1/(C−1)) = 0 removes the other terms). L = max_{j≠y} z_j − log max_j q_j, so the one
softmax pass gives both; the backward has no exp and four in-place passes.
"""

from __future__ import annotations

from typing import Annotated, Optional, Sequence

import torch
import torch.nn.functional as F

from lgm_gcp.errors import ConfigError
from lgm_gcp.losses.base import ClassifierInit, softmax_and_logsumexp
from lgm_gcp.losses.softmax import SoftmaxLoss
from lgm_gcp.options.fields import NONNEG, NonNeg, Probability


def large_margin_regularizer(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Per-sample R (N,), zero for ignored samples."""
    n, c = logits.shape
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    valid = targets != ignore_index
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    keep = torch.ones_like(z, dtype=torch.bool).scatter_(1, safe[:, None], False)
    log_q = F.log_softmax(z[keep].view(n, c - 1), dim=1)
    r = 0.5 * ((log_q.exp() - 1.0 / (c - 1)) * log_q).sum(1)
    return torch.where(valid, r, torch.zeros_like(r))


class FusedLargeMargin(torch.autograd.Function):
    """mean over the non-ignored rows of CE_i + λ R_i, logits (N, C) float32/float64, targets (N,)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, targets: torch.Tensor, reg_lambda: float, ignore_index: int):
        c = z.shape[1]
        valid = targets != ignore_index
        y = targets.where(valid, 0)[:, None]
        weight = valid.to(z.dtype).div_(valid.sum().clamp_min_(1))  # (N,): the mean over valid rows
        masked = z.scatter(1, y, float("-inf"))
        q, lse = softmax_and_logsumexp(masked)  # q is 0 on the target
        z_y = z.gather(1, y).squeeze_(1)
        margin = lse.sub_(z_y)  # L − z_y
        qz = torch.linalg.vecdot(q, z)
        two_r = torch.sub(qz, z.sum(1).sub_(z_y), alpha=1.0 / (c - 1))
        ctx.save_for_backward(z, y, q, qz, margin, weight)
        ctx.half_lam = 0.5 * reg_lambda
        return torch.linalg.vecdot(weight, F.softplus(margin).add_(two_r, alpha=ctx.half_lam))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, y, q, qz, margin, weight = ctx.saved_tensors
        h, c = ctx.half_lam, z.shape[1]
        row = (grad * weight)[:, None]  # (N, 1)
        not_py = torch.sigmoid(margin)[:, None]  # 1 − p_y
        # out_j = row [q_j (1 − p_y + h(1 − q·z) + h z_j) − h/(C − 1)], in place (an addcmul broadcasting
        # two (N, 1) operands picks a column-major output and runs 4× slower)
        out = torch.mul(z, row * h).add_(torch.add(not_py, qz[:, None], alpha=-h).add_(h).mul_(row))
        out.mul_(q).sub_(row * (h / (c - 1)))
        return out.scatter_(1, y, not_py.mul_(row).neg_()), None, None, None


REG_LAMBDA = 0.3  # λ of the paper and its reference (all of its experiments)


def large_margin_loss(logits: torch.Tensor, targets: torch.Tensor, reg_lambda: float = REG_LAMBDA,
                      weight: torch.Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                      deg_logit: float | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    n, c = logits.shape
    if c < 2:
        raise ConfigError(f"the large-margin loss needs at least 2 classes, got {c}")
    if deg_logit:
        valid = (targets != ignore_index)[:, None]
        onehot = F.one_hot(torch.where(valid[:, 0], targets, 0), c).to(logits.dtype) * valid
        logits = logits - deg_logit * onehot
    if weight is None and not label_smoothing and reduction == "mean":
        z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        return FusedLargeMargin.apply(z, targets, reg_lambda, ignore_index)
    ce = F.cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing)
    r = large_margin_regularizer(logits, targets, ignore_index)
    if reduction == "mean":
        r = r.sum() / (targets != ignore_index).sum().clamp_min(1)
    elif reduction == "sum":
        r = r.sum()
    elif reduction != "none":
        raise ValueError(f"reduction={reduction!r} is not valid; choose mean, sum or none")
    return ce + reg_lambda * r.to(ce.dtype)


class LargeMarginLoss(SoftmaxLoss):
    def __init__(self, in_features: int, num_classes: int, init: ClassifierInit = "default",
                 label_smoothing: Probability = 0.0, class_weights: Sequence[float] | None = None,
                 ignore_index: int = -100, reg_lambda: NonNeg = REG_LAMBDA,
                 deg_logit: Annotated[Optional[float], NONNEG] = None):
        if num_classes < 2:
            raise ConfigError(f"loss=large_margin needs at least 2 classes; the dataset has {num_classes}")
        super().__init__(in_features, num_classes, init, label_smoothing, class_weights, ignore_index)
        self.reg_lambda, self.deg_logit = reg_lambda, deg_logit

    def forward(self, features: torch.Tensor, targets: torch.Tensor, step: int = 0):
        logits = self.logits(features)
        w = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        loss = large_margin_loss(logits, targets, self.reg_lambda, w, self.ignore_index, "mean", self.deg_logit,
                                 self.label_smoothing)
        return loss, logits, {}
