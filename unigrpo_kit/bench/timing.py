"""Clocks for paired measurements, peak memory and the device's name."""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def clock(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``; on CUDA the queue is drained before and after."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def timed_pairs(
    a: Callable[[], object], b: Callable[[], object], repeats: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """Seconds of ``a`` and of ``b`` in ``repeats`` back-to-back rounds, after a warm-up each.

    Odd rounds run ``b`` first, so that whichever side gains from going second (warm caches,
    a reused allocation) gains on both sides alike.
    """
    a()
    b()
    times_a, times_b = [], []
    for round_index in range(repeats):
        if round_index % 2:
            times_b.append(clock(b, device))
            times_a.append(clock(a, device))
        else:
            times_a.append(clock(a, device))
            times_b.append(clock(b, device))
    return times_a, times_b


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory held by CUDA tensors, or on CPU the process's peak resident set."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, else KiB


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return f"cpu ({cpu})"
