"""Optimiser recipes: weight decay on every parameter by default, exclusions and LR multipliers as options."""

import math

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


def schedule_of(*overrides):
    from lgm_gcp.optim import build_schedule

    cfg = resolved(*overrides)
    return build_schedule(cfg["lr_policy"], cfg["optimizer"])


@pytest.mark.parametrize("epochs, warmup", [(300, 5.0), (30, 3.0), (5, 0.5)])
def test_adamw_brings_its_recipe_to_the_schedule(epochs, warmup):
    """optimizer=adamw alone: base LR 1e-3, warm-up from 1e-6 over min(5, epochs / 10) epochs, cosine to
    1e-5 (DeiT's recipe, its warm-up capped at torchvision's ViT fraction of 30/300). Hand-computed with
    4 steps an epoch: step 0 is the warm-up's start, 1e-3 · 1e-3 = 1e-6; half-way through the warm-up the
    LR is cos(...) · (1e-3 + (1 - 1e-3) / 2); the last step's is the cosine's, near min_lr."""
    sched = schedule_of("optimizer=adamw", f"trainer.max_epochs={epochs}")
    assert (sched.base_lr, sched.warmup_epochs, sched.warmup_start, sched.min_lr) == (1e-3, warmup, 1e-3, 1e-5)
    assert sched(0, 4) == pytest.approx(1e-6)
    half = int(warmup * 4 / 2)
    cosine = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * (half / 4) / epochs))
    assert sched(half, 4) == pytest.approx(cosine * (1e-3 + (1 - 1e-3) * half / (warmup * 4)))
    last = (epochs * 4 - 1) / 4
    end = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * last / epochs))
    assert sched(epochs * 4 - 1, 4) == pytest.approx(end)


def test_sgd_keeps_its_recipe_and_an_lr_set_in_the_config_wins():
    sched = schedule_of()
    assert (sched.base_lr, sched.warmup_epochs, sched.min_lr) == (0.1, 0.0, 0.0)
    sched = schedule_of("optimizer=adamw", "lr_policy.base_lr=3e-4", "lr_policy.warmup_epochs=0")
    assert (sched.base_lr, sched.warmup_epochs, sched.min_lr) == (3e-4, 0.0, 1e-5)
    assert schedule_of("optimizer=adamw", "lr_policy=step").base_lr == 1e-3  # every plain schedule takes it


def test_adamw_at_its_defaults_trains_the_demo_as_sgd_does(tmp_path):
    """lgm-gcp-train optimizer=adamw trainer.max_epochs=5: at SGD's LR of 0.1 AdamW ended at 22.9 %."""
    from lgm_gcp.engine.train import run

    summary = run(resolved("optimizer=adamw", "trainer.max_epochs=5", "trainer.progress=false"), tmp_path)
    assert summary["final"]["test_top1"] >= 95.0
