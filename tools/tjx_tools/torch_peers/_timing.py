"""The peers' timing: a callable timed after a warm-up, median of CUDA-event times (wall clock on
a CPU); and the back-to-back rate (calls dispatched without a wait, one synchronize at the end)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(cuda: bool) -> None:
    """Wait for the device (a no-op on a CPU)."""
    if cuda:
        torch.cuda.synchronize()


def median_s(fn: Callable[[], Any], iters: int, cuda: bool, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``iters`` calls after ``warmup`` calls, each call timed
    alone: CUDA events around it on a GPU (no host round trip counted), the wall clock on a CPU."""
    for _ in range(warmup):
        fn()
    sync(cuda)
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pipelined_s(fn: Callable[[], Any], iters: int, cuda: bool) -> float:
    """Seconds per call of ``iters`` calls dispatched back to back, one synchronize at the end."""
    sync(cuda)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(cuda)
    return (time.perf_counter() - t0) / iters
