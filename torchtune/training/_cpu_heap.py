"""Keep glibc's heap from holding on to freed activation memory on CPU.

glibc serves allocations below a threshold from one heap and, after the first large block
is freed, raises that threshold to 32 MiB. A training step's activations (a few MiB each,
a different size every step when batches have different lengths) then land in the heap
between small long-lived blocks; once freed, the holes they leave stay resident and
rarely fit the next step's sizes. On a 134M-parameter full fine-tune that is ~0.2 GiB of
peak RSS that no tensor uses. During the forward pass, blocks of ``FORWARD_MMAP_THRESHOLD``
or more therefore get their own ``mmap``, which ``free`` returns to the OS at once (the
saved activations are exactly the blocks that live long enough to fragment the heap).
The price is fresh pages for the forward's blocks every step, which the kernel must
fault in and zero (~0.4 CPU-seconds per step on that fine-tune). Backward keeps using
the heap: its blocks are short-lived, and what they leave free is reused by the next
backward. Elsewhere (non-glibc platforms, CUDA) it is a no-op.
"""

import ctypes
import ctypes.util
import platform
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

_M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h
FORWARD_MMAP_THRESHOLD = 64 * 1024
DEFAULT_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # where glibc's own adaptive threshold ends up


def _glibc() -> Optional[ctypes.CDLL]:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()


@contextmanager
def activations_in_own_pages(device: torch.device) -> Iterator[None]:
    """Inside the block, CPU allocations of 64 KiB or more are mmapped on their own."""
    if _LIBC is None or device.type != "cpu":
        yield
        return
    _LIBC.mallopt(_M_MMAP_THRESHOLD, FORWARD_MMAP_THRESHOLD)
    try:
        yield
    finally:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD_MAX)
