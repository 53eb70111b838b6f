"""The L-GM margin α as a pure function of the global training step (Caffe ``margin_mul``).

CONSTANT: α = value.  STEPUP: α = clamp(value · γ^⌊t/step⌋, min, max).
ADDUP: α = clamp(value + γ·⌊t/step⌋, min, max).  t is the 0-based global training step.

As in Caffe the initial value is never clamped, and ``max`` defaults to 1, which caps every
growing schedule. The Caffe layer counts its own forward calls and restarts the schedule when a
run is resumed from a snapshot; being a function of the restored global step, this one continues
it (a deliberate fix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lgm_gcp.errors import ConfigError

POLICIES = ("CONSTANT", "STEPUP", "ADDUP")


@dataclass(frozen=True)
class MarginSchedule:
    policy: str = "CONSTANT"
    value: float = 0.0
    step: int = 1000
    gamma: float = 1.0
    min: float = 0.0
    max: float = 1.0

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ConfigError(f"loss.margin.policy={self.policy!r} is not valid; choose one of {', '.join(POLICIES)}")
        if self.step < 1:
            raise ConfigError(f"loss.margin.step={self.step} must be at least 1")

    def __call__(self, t: int) -> float:
        k = t // self.step
        if self.policy == "CONSTANT" or k == 0:
            return self.value
        grown = self.value * self.gamma**k if self.policy == "STEPUP" else self.value + self.gamma * k
        return min(max(grown, self.min), self.max) if math.isfinite(grown) else self.max
