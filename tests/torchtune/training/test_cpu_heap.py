"""CPU heap hygiene: inside ``activations_in_own_pages`` mid-size tensors are mmapped on
their own (so freeing them gives the memory back), outside it they come from the heap as
before. glibc only."""

import ctypes
import platform

import pytest
import torch

from torchtune import training
from torchtune.training import _cpu_heap

pytestmark = pytest.mark.skipif(
    _cpu_heap._LIBC is None or not hasattr(_cpu_heap._LIBC, "mallinfo2"),
    reason=f"needs glibc >= 2.33 ({platform.libc_ver()})",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def mmapped_bytes() -> int:
    _cpu_heap._LIBC.mallinfo2.restype = _MallInfo2
    return _cpu_heap._LIBC.mallinfo2().hblkhd


@pytest.fixture(autouse=True)
def known_threshold():
    """Leaving the block pins glibc's threshold at 32 MiB (a fresh process starts at
    128 KiB and adapts), so every test starts from the state a training step leaves."""
    with training.activations_in_own_pages(torch.device("cpu")):
        pass


def test_mid_size_tensors_are_mmapped_only_inside_the_block():
    """256 x 1 MiB: glibc first reuses free heap blocks that fit, so 'most' is asserted
    (a test process may have tens of MiB of them), not 'all'."""
    cpu = torch.device("cpu")
    before = mmapped_bytes()
    with training.activations_in_own_pages(cpu):
        inside = [torch.ones(256 * 1024) for _ in range(256)]
    assert mmapped_bytes() - before >= 128 * 2**20
    del inside
    assert mmapped_bytes() - before < 2**20  # freed straight back to the OS

    outside = [torch.ones(256 * 1024) for _ in range(256)]  # the usual 32 MiB threshold
    assert mmapped_bytes() - before < 2**20
    del outside


def test_other_devices_are_left_alone():
    meta = torch.device("meta")
    before = mmapped_bytes()
    with training.activations_in_own_pages(meta):
        x = torch.ones(256 * 1024)
    assert mmapped_bytes() - before < 2**20
    del x
