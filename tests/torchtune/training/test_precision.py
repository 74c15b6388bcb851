import pytest
import torch

from torchtune import UserValueError
from torchtune.training import get_dtype, is_bf16_supported


@pytest.mark.parametrize(
    "name,expected",
    [
        ("fp32", torch.float32),
        ("bf16", torch.bfloat16),
        ("fp16", torch.float16),
        ("bfloat16", torch.bfloat16),
        (torch.float16, torch.float16),
        (None, torch.float32),
    ],
)
def test_get_dtype_maps_names(name, expected):
    assert get_dtype(name, device="cpu") is expected


@pytest.mark.parametrize("bad", ["fp8", "float", torch.int64])
def test_get_dtype_rejects_unknown(bad):
    with pytest.raises(ValueError, match="dtype"):
        get_dtype(bad)


def test_bf16_supported_on_cpu():
    assert is_bf16_supported("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bf16_on_missing_cuda_device_is_a_clear_error():
    assert not is_bf16_supported("cuda")
    with pytest.raises(UserValueError, match="bf16 is not supported on device cuda"):
        get_dtype("bf16", device="cuda")
    assert get_dtype("fp32", device="cuda") is torch.float32


def test_set_default_dtype_restores_previous():
    from torchtune.training import set_default_dtype

    before = torch.get_default_dtype()
    with set_default_dtype(torch.bfloat16):
        assert torch.nn.Linear(2, 2).weight.dtype == torch.bfloat16
    assert torch.get_default_dtype() == before
    with pytest.raises(RuntimeError):
        with set_default_dtype(torch.float64):
            raise RuntimeError("boom")
    assert torch.get_default_dtype() == before
