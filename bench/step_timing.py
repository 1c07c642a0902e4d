"""Timing one training step the same way in every benchmark: a warm-up step, then the mean of ``steps`` timed steps
and the peak memory (max allocated on CUDA, max RSS of the process on CPU)."""

from __future__ import annotations

import resource
import time


def time_steps(step, steps: int, device: str) -> tuple[float, int]:
    """(seconds per step, peak bytes) of calling ``step()``."""
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return seconds, peak
