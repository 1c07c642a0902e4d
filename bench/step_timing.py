"""Timing one training step the same way in every benchmark: a warm-up step, then the mean of ``steps`` timed steps
and the peak memory (max allocated on CUDA, max RSS of the process on CPU)."""

from __future__ import annotations

import resource
import time


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def peak_memory(device: str) -> int:
    """Peak bytes: max allocated on CUDA (since the last reset), max RSS of the process on CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_steps(step, steps: int, device: str) -> tuple[float, int]:
    """(seconds per step, peak bytes) of calling ``step()``."""
    import torch

    step()  # warm-up
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - t0) / steps, peak_memory(device)
