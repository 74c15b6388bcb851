"""A device the machine lacks is one line saying what to set (issue 24, item 7)."""

import pytest
import torch

from torchtune import UserValueError
from torchtune.utils import get_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def test_auto_and_none_pick_the_gpu_if_any_else_the_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_device("auto").type == expected and get_device(None).type == expected
    assert get_device("cpu") == torch.device("cpu")


@no_cuda
def test_absent_cuda_says_what_to_set_and_how_bf16_runs_here():
    with pytest.raises(UserValueError) as err:
        get_device("cuda")
    msg = str(err.value)
    assert msg.startswith("device: cuda is not available here (")
    assert "set device=cpu or device=auto (" in msg and "bf16" in msg
    assert "use dtype fp32" not in msg and "\n" not in msg
    with pytest.raises(UserValueError, match=r"device: cuda:1 is not available here"):
        get_device("cuda:1")


def test_a_value_that_is_no_device_is_named():
    with pytest.raises(UserValueError, match=r"device: 'gpu0' is not a device; use auto, cpu, cuda or cuda:N"):
        get_device("gpu0")
