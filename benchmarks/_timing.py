"""Shared by the benchmarks: times of callables by ``torch.utils.benchmark`` (which warms up,
synchronises CUDA and runs under the requested thread count), taken in interleaved rounds."""

from __future__ import annotations

import statistics
from typing import Callable, Mapping

import torch
from torch.utils import benchmark


def round_times(fns: Mapping[str, Callable[[], None]], rounds: int, number: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each ``fns[name]``, one entry per round. Every round times each callable
    ``number`` times in turn, so a drift of the machine's speed (this CPU's moves by ±15 % over a
    minute) reaches every case alike and per-round ratios cancel it."""
    timers = {name: benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
              for name, fn in fns.items()}
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer.timeit(number).median)
    return times


def ratio_quartiles(times: Mapping[str, list[float]], name: str, baseline: str) -> tuple[float, float, float]:
    """The quartiles (25 %, median, 75 %) over rounds of ``name``'s time over ``baseline``'s in the
    same round: the median is the figure, the spread says how far to trust its second digit."""
    low, mid, high = statistics.quantiles((a / b for a, b in zip(times[name], times[baseline])), n=4)
    return low, mid, high
