"""Learning-rate schedules as pure functions of (global step, steps per epoch).

Every schedule maps an *epoch position* e to an LR: e is the 0-based epoch index (per-epoch
updating, as the ResNet/MobileNetV2 references do) or the fractional epoch step / steps_per_epoch
(``per_iteration=true``, as ShuffleNetV2 and cosine recipes do). An optional linear warmup scales
the first ``warmup_epochs`` from ``warmup_start * lr`` up to ``lr``, per iteration.
Nothing is stored: a resumed run recomputes the LR from its restored step.
"""

from __future__ import annotations

import abc
import bisect
import math
from typing import Annotated, Optional, Sequence

from lgm_gcp.errors import ConfigError
from lgm_gcp.options.fields import COUNT, NONNEG, POSITIVE, PROBABILITY, RECIPE, RESUMABLE, Count, NonNeg, Positive

Epochs = Annotated[int, COUNT, RESUMABLE]  # the schedule's length; a resumed run may extend it
# `auto` in a config: the optimizer's recipe decides (lgm_gcp/optim.py, schedule_recipe), else these defaults
BaseLR = Annotated[float, POSITIVE, RECIPE]
WarmupEpochs = Annotated[float, NONNEG, RECIPE]
WarmupStart = Annotated[float, PROBABILITY, RECIPE]


class LRSchedule(abc.ABC):
    """``warmup_start``: the fraction of base_lr at step 0 of the warmup. ``base_lr``, ``warmup_epochs``,
    ``warmup_start`` (and the cosine's ``min_lr``) say ``auto`` by default: the optimizer's recipe sets them
    (SGD: 0.1 and no warm-up; AdamW: 1e-3, a short warm-up, cosine to 1e-5), a value set in the config wins."""

    def __init__(self, base_lr: BaseLR = 0.1, *, epochs: Epochs, per_iteration: bool = False,
                 warmup_epochs: WarmupEpochs = 0.0, warmup_start: WarmupStart = 0.0):
        self.base_lr, self.epochs, self.per_iteration = float(base_lr), int(epochs), per_iteration
        self.warmup_epochs, self.warmup_start = float(warmup_epochs), float(warmup_start)

    @abc.abstractmethod
    def lr_at(self, e: float, step: int) -> float:
        """The LR at epoch position e (``step`` for step-indexed milestones)."""

    def __call__(self, step: int, steps_per_epoch: int) -> float:
        e = step / steps_per_epoch if self.per_iteration else float(step // steps_per_epoch)
        lr = self.lr_at(e, step)
        warmup_steps = self.warmup_epochs * steps_per_epoch
        if step < warmup_steps:
            lr *= self.warmup_start + (1.0 - self.warmup_start) * step / warmup_steps
        return lr

    def epoch_values(self, steps_per_epoch: int = 1) -> list:
        """The LR at the first step of every epoch (for plots and tests)."""
        return [self(e * steps_per_epoch, steps_per_epoch) for e in range(self.epochs)]


class Constant(LRSchedule):
    def lr_at(self, e, step):
        return self.base_lr


class Cosine(LRSchedule):
    """lr(e) = min_lr + (base_lr - min_lr) * (1 + cos(pi e / epochs)) / 2."""

    def __init__(self, min_lr: Annotated[float, NONNEG, RECIPE] = 0.0, **kw):
        super().__init__(**kw)
        self.min_lr = min_lr

    def lr_at(self, e, step):
        cosine = math.cos(math.pi * min(e, self.epochs) / self.epochs)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + cosine)


class MultiStep(LRSchedule):
    """lr = base_lr * gamma^(number of milestones passed); milestones in epochs, or in steps."""

    def __init__(self, milestones: Sequence[int] = (30, 60, 90), gamma: Positive = 0.1,
                 milestones_in_steps: bool = False, **kw):
        super().__init__(**kw)
        self.milestones, self.gamma, self.in_steps = sorted(milestones), gamma, milestones_in_steps

    def lr_at(self, e, step):
        position = step if self.in_steps else e
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, position)


class Step(LRSchedule):
    """lr = base_lr * gamma^floor(e / step_size) (LR_norm of the GCP study: 0.1 * 0.1^floor(e/30))."""

    def __init__(self, step_size: Count = 30, gamma: Positive = 0.1, **kw):
        super().__init__(**kw)
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, e, step):
        return self.base_lr * self.gamma ** math.floor(e / self.step_size)


class Exponential(LRSchedule):
    """lr = base_lr * gamma^e (MobileNetV2 LR_norm 0.045 * 0.98^e, LR_fast 0.06 * 0.92^e)."""

    def __init__(self, gamma: Positive = 0.98, **kw):
        super().__init__(**kw)
        self.gamma = gamma

    def lr_at(self, e, step):
        return self.base_lr * self.gamma**e


class Polynomial(LRSchedule):
    """lr = base_lr * max(0, 1 - (e - offset) / length)^power.

    The GCP study's LR_fast is (offset 1, length 52, power 11) and LR_adju (1, 49, 2): the offset
    puts epoch 0 *above* base_lr (0.1233 and 0.1041), as the published code does.
    """

    def __init__(self, power: Positive = 2.0, length: Annotated[Optional[float], POSITIVE] = None, offset: float = 0.0,
                 **kw):
        super().__init__(**kw)
        self.power, self.length, self.offset = power, float(length or self.epochs), offset

    def lr_at(self, e, step):
        return self.base_lr * max(0.0, 1.0 - (e - self.offset) / self.length) ** self.power


class LogSpaced(LRSchedule):
    """lr_e = 10^(log10 base + (log10 final - log10 base) * e / (epochs - 1)): the large-margin CIFAR
    recipe, 0.1 -> 1e-4 over 50 epochs (e = 1 -> 0.08685, e = 49 -> 1e-4)."""

    def __init__(self, final_lr: Positive = 1e-4, **kw):
        super().__init__(**kw)
        self.final_lr = final_lr

    def lr_at(self, e, step):
        a, b = math.log10(self.base_lr), math.log10(self.final_lr)
        t = min(e, self.epochs - 1) / max(self.epochs - 1, 1)
        return 10 ** (a + (b - a) * t)


class PiecewiseLinear(LRSchedule):
    """Linear interpolation between knots [[epoch, lr], ...]; the last lr holds afterwards.
    ``base_lr`` is only the reference for the optimizer's construction."""

    def __init__(self, knots: Sequence[Sequence[float]], **kw):
        super().__init__(**kw)
        if len(knots) < 1:
            raise ConfigError("lr_policy.knots needs at least one [epoch, lr] pair")
        self.knots = sorted((float(k[0]), float(k[1])) for k in knots)

    def lr_at(self, e, step):
        xs = [k[0] for k in self.knots]
        i = bisect.bisect_right(xs, e)
        if i == 0:
            return self.knots[0][1]
        if i == len(self.knots):
            return self.knots[-1][1]
        (x0, y0), (x1, y1) = self.knots[i - 1], self.knots[i]
        return y0 + (y1 - y0) * (e - x0) / (x1 - x0)


class Linear(LRSchedule):
    """lr = base_lr + (final_lr - base_lr) * e / epochs: ShuffleNetV2's 0.5 (1 - t / (E I)) per iteration."""

    def __init__(self, final_lr: NonNeg = 0.0, **kw):
        super().__init__(**kw)
        self.final_lr = final_lr

    def lr_at(self, e, step):
        t = min(e / self.epochs, 1.0)
        return self.base_lr + (self.final_lr - self.base_lr) * t
