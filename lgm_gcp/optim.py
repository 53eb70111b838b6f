"""Optimiser factories. Parameter groups carry ``lr_mult``; the trainer sets lr = schedule * lr_mult."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from lgm_gcp.options.fields import DROP_RATE, NonNeg, Positive

# a transformer's learned tokens and position embeddings (timm's names), never decayed where norms are not
TOKEN_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token", "relative_position_bias_table")


def _is_no_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or name.rsplit(".", 1)[-1] in TOKEN_NAMES


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = True,
                 classifier_lr_mult: float = 1.0) -> list:
    """Split into body / classifier (the criterion's weights) x decay / no-decay groups.

    Parameters flagged ``no_weight_decay`` (the L-GM variances) are never decayed; a criterion's
    ``lr_mult`` attribute (the L-GM means' lr_mult 2 of the Caffe example) multiplies its group.
    """
    groups: dict = {}
    criterion = getattr(model, "criterion", None)
    classifier_ids = {id(p) for p in criterion.parameters()} if criterion is not None else set()
    base_mult = getattr(criterion, "lr_mult", 1.0)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_cls = id(p) in classifier_ids
        no_decay = getattr(p, "no_weight_decay", False) or (not decay_norm_and_bias and _is_no_decay(name, p))
        mult = classifier_lr_mult * base_mult * getattr(p, "lr_mult", 1.0) if is_cls else 1.0
        key = (is_cls, no_decay, mult)
        group = groups.setdefault(key, {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                        "lr_mult": mult, "name": f"{'classifier' if is_cls else 'body'}"
                                        f"{'_no_decay' if no_decay else ''}"})
        group["params"].append(p)
    return list(groups.values())


def sgd(model: nn.Module, lr: float, momentum: Annotated[float, DROP_RATE] = 0.9, nesterov: bool = True,
        weight_decay: NonNeg = 5e-4, decay_norm_and_bias: bool = True,
        classifier_lr_mult: NonNeg = 1.0) -> torch.optim.SGD:
    """SGD over ``param_groups`` (momentum in [0, 1)). ``decay_norm_and_bias``: the references decay every
    parameter. The builder calls it with the model and the schedule's first LR (``optimizer`` is partial)."""
    groups = param_groups(model, weight_decay, decay_norm_and_bias, classifier_lr_mult)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def adamw(model: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: Positive = 1e-8,
          weight_decay: NonNeg = 0.05, decay_norm_and_bias: bool = False,
          classifier_lr_mult: NonNeg = 1.0) -> torch.optim.AdamW:
    """torch's AdamW over ``param_groups``: decoupled weight decay, by default not on norms, biases and a
    transformer's tokens and position embeddings (``decay_norm_and_bias=false``), as timm fine-tunes its
    trunks; the classifier's LR times ``classifier_lr_mult``."""
    groups = param_groups(model, weight_decay, decay_norm_and_bias, classifier_lr_mult)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
