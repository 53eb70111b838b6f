"""The GCP study's loss-landscape probe (Wang et al., CVPR 2020, after Santurkar et al., NeurIPS 2018),
a per-step hook of the trainer (``trainer.landscape_every=N``); its records live in the training state
(``state["landscape"]``), are saved in every checkpoint and listed in metrics.json, where
``lgm-gcp-plot-landscape`` (lgm_gcp/analysis/landscape.py) reads them.

Every N steps, before that step's SGD update, on a copy of the network with the step's weights and on
the step's training batch: split the network after its stem (``models/backbones/stem.py``),
y = stem(images) (B, C, h, w), L the run's training loss of rest(y), g = ∇_y L. For the step sizes
δ_i = a + i(b − a)/(n − 1), i = 0 … n−1 (``trainer.landscape_range`` [a, b] = [0.1, 75] and
``landscape_points`` n = 50, the study's ResNet setting; its MobileNetV2 used [0.045, 1.5]), record

  loss:      L(y + δ_i g)                      (Lipschitzness of the loss)
  gradient:  ‖∇_y L(y + δ_i g) − g‖₂           (gradient predictiveness)

and keep their min and max over δ. As the study's code: the step is along +g, BatchNorm runs in
training mode on the copy, and the loss is the training loss (cross-entropy for softmax; the margin
and likelihood terms for L-GM). The copy and a forked RNG leave the training run bitwise unchanged.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

from lgm_gcp.models.backbones.stem import split_after_stem


def step_sizes(low: float, high: float, points: int) -> list:
    return [low + i * (high - low) / max(points - 1, 1) for i in range(points)]


def probe(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int, deltas: Sequence[float]) -> dict:
    """The ranges over ``deltas`` of L(y + δg) and ‖∇L(y + δg) − g‖₂ on a copy of ``model`` (a Network)."""
    devices = [images.device.index or 0] if images.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        net = copy.deepcopy(model).train()
        for p in net.parameters():
            p.requires_grad_(False)
        stem, rest = split_after_stem(net.backbone)

        def loss_and_grad(y: torch.Tensor) -> tuple:
            y = y.detach().requires_grad_(True)
            loss = net.criterion(net.head(rest(y)), targets, step)[0]
            return loss.detach(), torch.autograd.grad(loss, y)[0]

        with torch.no_grad():
            y0 = stem(images).float()
        _, g = loss_and_grad(y0)
        losses, gaps = [], []
        for delta in deltas:
            loss, grad = loss_and_grad(y0 + delta * g)
            losses.append(loss.item())
            gaps.append(torch.linalg.vector_norm(grad - g).item())
    return {"step": step, "loss_min": min(losses), "loss_max": max(losses), "grad_min": min(gaps),
            "grad_max": max(gaps)}


def probe_hook(tcfg) -> Callable | None:
    """The trainer's per-step probe (``tcfg``: the trainer's typed config, its landscape_range checked at
    start-up), or None when ``trainer.landscape_every`` is 0."""
    every = tcfg.landscape_every
    if not every:
        return None
    low, high = tcfg.landscape_range
    deltas = step_sizes(low, high, tcfg.landscape_points)
    return lambda model, images, targets, step: probe(model, images, targets, step, deltas) if step % every == 0 \
        else None
