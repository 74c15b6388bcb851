"""Peak-memory readings for logs and benchmarks."""

import resource
import sys
from typing import Union

import torch

_GIB = 1024**3


def _peak_rss_bytes() -> int:
    # On Linux, a child's ru_maxrss starts at its parent's peak; VmHWM is this process's own.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS (getrusage(2)).
    return peak if sys.platform == "darwin" else peak * 1024


def get_memory_stats(
    device: Union[str, torch.device], reset_stats: bool = True
) -> dict[str, float]:
    """Peak memory of this process, in GiB.

    Args:
        device (Union[str, torch.device]): the training device.
        reset_stats (bool): on CUDA, reset the peak counters after reading them, so that the
            next call reports the peak since this one. The RSS peak cannot be reset.

    Returns:
        dict[str, float]: ``"peak_memory_rss"`` (process peak resident set size) always; on a
        CUDA device also ``"peak_memory_active"``, ``"peak_memory_alloc"`` and
        ``"peak_memory_reserved"`` from the caching allocator.
    """
    device = torch.device(device)
    stats = {"peak_memory_rss": _peak_rss_bytes() / _GIB}
    if device.type == "cuda":
        cuda_stats = torch.cuda.memory_stats(device)
        stats["peak_memory_active"] = cuda_stats.get("active_bytes.all.peak", 0) / _GIB
        stats["peak_memory_alloc"] = torch.cuda.max_memory_allocated(device) / _GIB
        stats["peak_memory_reserved"] = torch.cuda.max_memory_reserved(device) / _GIB
        if reset_stats:
            torch.cuda.reset_peak_memory_stats(device)
    return stats


def format_memory_stats(stats: dict[str, float]) -> str:
    """One log line for :func:`get_memory_stats`'s output, e.g. ``peak_memory_rss: 1.23 GiB``."""
    return " | ".join(f"{name}: {value:.2f} GiB" for name, value in stats.items())
