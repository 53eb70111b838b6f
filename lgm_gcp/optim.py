"""Optimiser factories. Parameter groups carry ``lr_mult``; the trainer sets lr = schedule * lr_mult.

Each optimizer brings the LR recipe its references train with (``schedule_recipe``): the LR schedule's fields
that say ``auto`` (``base_lr``, ``warmup_epochs``, ``warmup_start``, the cosine's ``min_lr``) take it, and a
value set in the config wins (``lr_policy.base_lr=3e-4``).
"""

from __future__ import annotations

from typing import Annotated, Any, Mapping

import torch
from torch import nn

from lgm_gcp.options.derive import resolve_auto
from lgm_gcp.options.fields import DROP_RATE, NonNeg, Positive
from lgm_gcp.options.instantiate import instantiate, locate

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


def sgd_schedule(epochs: int) -> dict:
    """SGD's recipe: base LR 0.1 and no warm-up (He et al. 2016 for batch 256; torchvision's reference
    ``--lr 0.1``), the schedule's decay to 0."""
    return {"base_lr": 0.1, "warmup_epochs": 0.0, "warmup_start": 0.0, "min_lr": 0.0}


def adamw_schedule(epochs: int) -> dict:
    """AdamW's recipe, as DeiT (Touvron et al. 2021) and torchvision's ViT and ConvNeXt recipes train with it:
    base LR 1e-3 (DeiT's 5e-4 per 512 images and torchvision's ConvNeXt 4e-3 per 4096 are both 1e-3 per
    1024), a linear warm-up from 1e-6 (``warmup_start`` 1e-3 of the base) over DeiT's 5 epochs, but never more
    than a tenth of the run (torchvision's ViT: 30 of 300), then cosine decay to 1e-5 (DeiT's ``min_lr``)."""
    return {"base_lr": 1e-3, "warmup_epochs": min(5.0, epochs / 10), "warmup_start": 1e-3, "min_lr": 1e-5}


sgd.schedule_recipe = sgd_schedule
adamw.schedule_recipe = adamw_schedule


def schedule_recipe(optimizer_cfg: Mapping[str, Any], epochs: int) -> dict:
    """The LR recipe of the optimizer ``optimizer_cfg`` names (an optimizer without one: the schedule's own
    signature defaults)."""
    recipe = getattr(locate(optimizer_cfg["_target_"], "optimizer"), "schedule_recipe", None)
    return recipe(epochs) if recipe is not None else {}


def build_schedule(lr_policy_cfg: Mapping[str, Any], optimizer_cfg: Mapping[str, Any]):
    """The LR schedule of ``lr_policy_cfg``, its ``auto`` fields filled from the optimizer's recipe."""
    recipe = schedule_recipe(optimizer_cfg, int(lr_policy_cfg.get("epochs") or 1))
    return instantiate(resolve_auto(lr_policy_cfg, recipe, locate(lr_policy_cfg["_target_"], "lr_policy")))
