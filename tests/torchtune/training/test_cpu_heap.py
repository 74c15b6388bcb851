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


_MID_SIZE_CHECK = """
import torch
from torchtune import training
from torchtune.training import _cpu_heap
from test_cpu_heap import mmapped_bytes

cpu = torch.device("cpu")
with training.activations_in_own_pages(cpu):  # pins glibc's threshold, as a step leaves it
    pass
before = mmapped_bytes()
with training.activations_in_own_pages(cpu):
    inside = [torch.ones(256 * 1024) for _ in range(256)]
grown = mmapped_bytes() - before
del inside
freed = mmapped_bytes() - before
outside = [torch.ones(256 * 1024) for _ in range(256)]  # the usual 32 MiB threshold
print(grown, freed, mmapped_bytes() - before)
"""


def test_mid_size_tensors_are_mmapped_only_inside_the_block():
    """256 x 1 MiB, in a fresh process: glibc first reuses free heap blocks that fit, and a
    long test process holds an unknown amount of them, so 'most' is asserted where the
    heap is young."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.getcwd()]))
    out = subprocess.run([sys.executable, "-c", _MID_SIZE_CHECK], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    grown, freed, outside = map(int, out.stdout.split())
    assert grown >= 128 * 2**20  # most of the 256 MiB got pages of their own
    assert freed < 2**20  # freed straight back to the OS
    assert outside < 2**20  # outside the block they come from the heap


def test_other_devices_are_left_alone():
    meta = torch.device("meta")
    before = mmapped_bytes()
    with training.activations_in_own_pages(meta):
        x = torch.ones(256 * 1024)
    assert mmapped_bytes() - before < 2**20
    del x
