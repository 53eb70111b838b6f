"""Shared by the benchmarks: the median time of a callable, by ``torch.utils.benchmark`` (which
warms up, synchronises CUDA and runs under the requested thread count)."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils import benchmark


def median_seconds(fn: Callable[[], None], repeats: int, cuda: bool = False) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up (``cuda``: kept for callers;
    the Timer synchronises CUDA itself)."""
    fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(repeats).median
