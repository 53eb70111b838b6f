"""Optimiser recipes: weight decay on every parameter by default, exclusions and LR multipliers as options."""

import pytest
import torch

from lgm_gcp.models.build import build_model
from lgm_gcp.optim import set_lr, sgd

from conftest import resolved


def groups_of(*overrides):
    cfg = resolved(*overrides)
    model = build_model(cfg, 10, 1)
    opt = sgd(model, lr=0.1, **{k: v for k, v in cfg["optimizer"].items() if not k.startswith("_")})
    return model, opt


def test_default_decays_every_parameter_like_the_references():
    model, opt = groups_of()
    assert all(g["weight_decay"] == 5e-4 for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_excluding_norm_and_bias_from_decay():
    model, opt = groups_of("optimizer.decay_norm_and_bias=false")
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in no_decay) == (p.ndim <= 1), name


def test_lgm_means_lr_mult_and_sigma_never_decayed():
    model, opt = groups_of("loss=lgm", "loss.means_lr_mult=2", "loss.update_sigma=true",
                           "optimizer.classifier_lr_mult=1.5")
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.criterion.means)]["lr_mult"] == 3.0
    assert by_param[id(model.criterion.means)]["weight_decay"] == 5e-4
    assert by_param[id(model.criterion.log_sigma)]["weight_decay"] == 0.0
    set_lr(opt, 0.2)
    assert by_param[id(model.criterion.means)]["lr"] == pytest.approx(0.6)
    assert by_param[id(next(model.backbone.parameters()))]["lr"] == pytest.approx(0.2)


def test_frozen_sigma_is_not_optimised():
    model, opt = groups_of("loss=lgm")
    assert all(p is not model.criterion.log_sigma for g in opt.param_groups for p in g["params"])
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]


def test_adamw_decays_weights_but_no_norm_bias_or_transformer_token_and_scales_the_classifier():
    """optimizer=adamw as composed: torch's AdamW, decay 0.05 on the conv and linear weights only; a
    parameter named as a timm transformer's position embedding or class token is a weight (ndim 3) that
    still goes undecayed; the classifier's group runs at classifier_lr_mult times the LR."""
    from lgm_gcp.options.instantiate import instantiate

    cfg = resolved("optimizer=adamw", "optimizer.classifier_lr_mult=5")
    model = build_model(cfg, 10, 1)
    model.backbone.pos_embed = torch.nn.Parameter(torch.zeros(1, 4, 8))
    model.backbone.cls_token = torch.nn.Parameter(torch.zeros(1, 1, 8))
    opt = instantiate(cfg["optimizer"])(model, lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        decayed = p.ndim > 1 and not name.endswith(("pos_embed", "cls_token"))
        assert by_param[id(p)]["weight_decay"] == (0.05 if decayed else 0.0), name
    set_lr(opt, 1e-3)
    assert by_param[id(model.criterion.fc.weight)]["lr"] == pytest.approx(5e-3)
    assert by_param[id(model.backbone.pos_embed)]["lr"] == pytest.approx(1e-3)
