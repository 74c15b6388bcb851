"""Mapping config dtype names to torch dtypes, with a check that the device supports them."""

import contextlib
from typing import Iterator, Optional, Union

import torch

from torchtune._errors import UserValueError

# Config spellings. The short names are what recipe configs use (`dtype: bf16`).
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def is_bf16_supported(device: Union[str, torch.device]) -> bool:
    """Whether ``device`` runs bf16 natively.

    CPU kernels exist for bf16 on every platform torch supports. For CUDA the GPU must have
    native bf16 (Ampere or newer); pre-Ampere emulation is slow enough to count as missing.

    Args:
        device (Union[str, torch.device]): the device, e.g. ``"cpu"`` or ``"cuda:0"``.

    Returns:
        bool: True if bf16 tensors can be used for training on ``device``.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch without the keyword
            return torch.cuda.is_bf16_supported()
    try:
        torch.ones(1, dtype=torch.bfloat16, device=device)
    except (RuntimeError, TypeError):
        return False
    return True


def get_dtype(
    dtype: Optional[Union[str, torch.dtype]] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> torch.dtype:
    """Turn a config dtype (``"fp32"``, ``"bf16"``, ``"fp16"`` or a ``torch.dtype``) into a dtype.

    Args:
        dtype (Optional[Union[str, torch.dtype]]): the name or dtype; None means fp32.
        device (Optional[Union[str, torch.device]]): if given, bf16 is checked against it.

    Returns:
        torch.dtype: one of float32, bfloat16, float16.

    Raises:
        ValueError: if the name is not one of the supported dtypes.
        RuntimeError: if bf16 is requested for a device that lacks it.

    Example:
        >>> get_dtype("bf16", "cpu")
        torch.bfloat16
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise UserValueError(f"Unsupported dtype {dtype}; use one of fp32, bf16, fp16")
        torch_dtype = dtype
    elif isinstance(dtype, str) and dtype in _DTYPES:
        torch_dtype = _DTYPES[dtype]
    else:
        raise UserValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    if torch_dtype == torch.bfloat16 and device is not None and not is_bf16_supported(device):
        raise UserValueError(
            f"bf16 is not supported on device {torch.device(device)}; use dtype fp32"
        )
    return torch_dtype


@contextlib.contextmanager
def set_default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules in ``dtype`` inside the block, then restore the previous default.

    Example:
        >>> with set_default_dtype(torch.bfloat16), torch.device("cuda"):
        ...     model = llama2_7b()
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
