"""The L-GM margin α as a pure function of the global training step (Caffe ``margin_mul``).

Caffe updates the value every ``step`` iterations, clamping each update:
CONSTANT: α = value.  STEPUP: α_k = clamp(α_{k−1} · γ, min, max).  ADDUP: α_k = clamp(α_{k−1} + γ, min, max),
with α_0 = value (never clamped) and k = ⌊t/step⌋, t the 0-based global training step.
After the first update α lies in [min, max], and from there the updates are monotone (γ ≥ 0), so
α_k = clamp(f^{k−1}(α_1)) in closed form: equal to Caffe's step-by-step clamp for every start value,
also one outside [min, max] (where clamp(f^k(value)) would not be).

The defaults are the Caffe CIFAR-100 example's: STEPUP from 0.1, ×2 every 5000 steps, capped at
``max`` 0.3; the config's ``loss.margin`` is derived from this class. The Caffe layer counts its own forward
calls and restarts the schedule when a run is resumed from a snapshot; being a function of the
restored global step, this one continues it (a deliberate fix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lgm_gcp.options.fields import Count, NonNeg

Policy = Literal["CONSTANT", "STEPUP", "ADDUP"]


@dataclass(frozen=True)
class MarginSchedule:
    """Written here once: ``loss.margin`` of L-GM's config is derived from these fields."""

    policy: Policy = "STEPUP"
    value: NonNeg = 0.1
    step: Count = 5000
    gamma: NonNeg = 2.0
    min: NonNeg = 0.0
    max: NonNeg = 0.3  # the Caffe CIFAR-100 example's cap

    def _update(self, value: float, times: int) -> float:
        """f^times(value) without clamping: value·γ^times (STEPUP) or value + γ·times (ADDUP)."""
        grown = value * self.gamma**times if self.policy == "STEPUP" else value + self.gamma * times
        return grown if math.isfinite(grown) else math.inf

    def _clamp(self, value: float) -> float:
        return min(max(value, self.min), self.max)

    def __call__(self, t: int) -> float:
        k = t // self.step
        if self.policy == "CONSTANT" or k == 0:
            return self.value
        first = self._clamp(self._update(self.value, 1))  # Caffe's first clamped update
        return self._clamp(self._update(first, k - 1))
