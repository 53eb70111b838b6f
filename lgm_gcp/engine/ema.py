"""Exponential moving average of the model's weights, evaluated separately, saved and resumed.

ema ← decay · ema + (1 − decay) · model after every optimizer step (floating-point parameters and
buffers; integer buffers such as BatchNorm's counters are copied).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lgm_gcp.errors import ConfigError


class ModelEma:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"trainer.ema_decay={decay} must be in (0, 1), e.g. 0.9998")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_state, state = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in ema_state.items() if v.is_floating_point()]
        torch._foreach_lerp_([ema_state[k] for k in floats], [state[k].detach() for k in floats], 1.0 - self.decay)
        for k, v in ema_state.items():
            if not v.is_floating_point():
                v.copy_(state[k])

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
