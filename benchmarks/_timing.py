"""Shared by the benchmarks: the median wall time of a callable after one warm-up call."""

from __future__ import annotations

import time
from typing import Callable

import torch


def median_seconds(fn: Callable[[], None], repeats: int, cuda: bool = False) -> float:
    def once():
        fn()
        if cuda:
            torch.cuda.synchronize()

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
