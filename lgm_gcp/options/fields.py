"""What an option's signature says about each parameter, beyond its Python type: the bottom of the config
layer, imported by the option classes themselves (heads, losses, schedules, optimizers, trackers).

A parameter is written once, in the class signature, and ``lgm_gcp.options.derive`` turns the signature
into the option's schema::

    def __init__(self, in_channels: int, dim: Count = 256, sqrt: Literal["newton_schulz", "eigh"] = ...,
                 dropout: Annotated[float, Range(0, 1, high_open=True), RECIPE] = 0.0): ...

``Literal`` gives the valid strings, a ``Range`` the valid numbers (both checked at start-up, with one line
naming the key), ``RECIPE`` lets a recipe decide (the backbone's for heads and losses, the optimizer's for
LR schedules; the config default becomes ``auto``, and the signature's default is what ``auto`` means
without a recipe for it), ``BY_HEAD`` lets the head decide (``auto`` too), ``OR_AUTO`` takes ``auto``
beside a number, and ``RESUMABLE`` marks a parameter a resumed run may change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric field, checked by ``validate`` after composition (None, ``auto``
    and other strings are left to the field's own type and use)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not valid
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


@dataclass(frozen=True)
class Marker:
    name: str


# config default `auto`: a recipe decides, the backbone's for a head or loss (lgm_gcp/models/build.py), the
# optimizer's for an LR schedule (lgm_gcp/optim.py: schedule_recipe)
RECIPE = Marker("recipe")
BY_HEAD = Marker("head")  # config default `auto`: the head's preference decides (backbone.last_stride)
RESUMABLE = Marker("resumable")  # a resumed run may change it (lgm_gcp/engine/checkpoint.py)
OR_AUTO = Marker("or auto")  # a number in its Range or the string `auto`, which the code using it decides

COUNT = Range(low=1)
NONNEG = Range(low=0)
POSITIVE = Range(low=0, low_open=True)
PROBABILITY = Range(low=0, high=1)
DROP_RATE = Range(low=0, high=1, high_open=True)

Count = Annotated[int, COUNT]  # an integer >= 1
Index = Annotated[int, NONNEG]  # a size, offset or index that may be zero
NonNeg = Annotated[float, NONNEG]  # a rate, decay or weight that may be zero
Positive = Annotated[float, POSITIVE]  # learning rates, variances
Probability = Annotated[float, PROBABILITY]
