"""NF4 (4-bit NormalFloat, Dettmers et al. 2023) through torchao: the one place it is imported.

torchao is imported lazily, on the first call that needs it, so ``import torchtune`` and
every model without a quantized base stay free of it. The NF4 format itself is torchao's
``NF4Tensor``: 64-value blocks, each scaled by its absmax, and the absmax scalers
double-quantized to int8 in groups of 256. Nothing here quantizes by hand.
"""

import contextlib
import importlib
import logging
import sys
from types import SimpleNamespace
from typing import Iterator, Optional

import torch

from torchtune._errors import UserError, UserValueError

# Where NF4Tensor lives, newest torchao first: 0.18 moved it under quantization/, older
# releases (and torchtune 0.6.1) import it from dtypes/.
_NF4_MODULES = (
    "torchao.quantization.quantize_.workflows.nf4.nf4_tensor",
    "torchao.dtypes.nf4tensor",
)
# Loggers that torchao's import writes to: its loader warns once per optional CUDA kernel
# library it cannot load ("Failed to load ..._C_*.so"), which is noise for NF4, and newer
# torch warns about a pytree registration torchao still makes.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")

_api: Optional[SimpleNamespace] = None

# torchao's default NF4 layout: 64 values per absmax scaler, 256 scalers per int8 factor, so
# a quantized weight's size must be a multiple of their product.
NF4_BLOCK = 64 * 256


class TorchaoMissingError(UserError, ImportError):
    """torchao, which a quantized base weight needs, is not installed."""


@contextlib.contextmanager
def _quiet(names) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def nf4_api() -> SimpleNamespace:
    """torchao's NF4 entry points, imported on first use.

    Returns:
        SimpleNamespace: ``NF4Tensor``, ``to_nf4`` and ``linear_nf4`` of the installed torchao.

    Raises:
        TorchaoMissingError: if no torchao with NF4 support is installed.
    """
    global _api
    if _api is None:
        with _quiet(_NOISY_LOGGERS):
            for name in _NF4_MODULES:
                try:
                    mod = importlib.import_module(name)
                except ImportError:
                    continue
                _api = SimpleNamespace(
                    NF4Tensor=mod.NF4Tensor, to_nf4=mod.to_nf4, linear_nf4=mod.linear_nf4
                )
                break
        if _api is None:
            raise TorchaoMissingError(
                "quantize_base=True (QLoRA) needs torchao's NF4 tensors: pip install torchao"
            )
    return _api


def check_nf4_size(in_dim: int, out_dim: int) -> None:
    """Raise a one-line error if an ``[out_dim, in_dim]`` weight cannot be NF4 (its size must
    be a multiple of ``NF4_BLOCK``, 16384)."""
    if (in_dim * out_dim) % NF4_BLOCK:
        raise UserValueError(
            f"quantize_base needs in_dim * out_dim to be a multiple of {NF4_BLOCK} "
            f"(NF4 blocks), got {in_dim} x {out_dim}"
        )


def to_nf4(
    tensor: torch.Tensor, block_size: int = 64, scaler_block_size: int = 256
) -> torch.Tensor:
    """Quantize ``tensor`` to an ``NF4Tensor`` (same shape and nominal dtype).

    Args:
        tensor (torch.Tensor): a 1-D or 2-D tensor whose size is a multiple of
            ``block_size * scaler_block_size`` (16384 by default).
        block_size (int): values sharing one absmax scaler.
        scaler_block_size (int): scalers sharing one int8 double-quantization factor.

    Returns:
        torch.Tensor: torchao's ``NF4Tensor``.
    """
    return nf4_api().to_nf4(tensor, block_size=block_size, scaler_block_size=scaler_block_size)


# The plain tensors an NF4Tensor is made of (torchao's names): the 4-bit codes two per
# byte, the int8 block scalers, their per-group factors, the scalers' mean, the 16 levels.
_NF4_PARTS = ("quantized_data", "quantized_scalers", "quantization_factor", "scaler_mean", "nf4")


def nf4_parts(tensor: torch.Tensor) -> list:
    """The plain tensors inside an ``NF4Tensor``, in a fixed order. Writing into them (e.g.
    a collective's receive) changes the NF4 tensor in place: no collective runs on an
    ``NF4Tensor`` itself, but one can run on each of its parts."""
    return [getattr(tensor, name) for name in _NF4_PARTS]


def linear_nf4(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ dequantize(weight).T`` with the NF4 weight saved (not its dequantized copy) for
    backward; no gradient flows to ``weight``.

    Args:
        x (torch.Tensor): [..., in_dim].
        weight (torch.Tensor): ``NF4Tensor`` [out_dim, in_dim].

    Returns:
        torch.Tensor: [..., out_dim] in ``x``'s dtype.
    """
    return nf4_api().linear_nf4(x, weight)


def is_nf4(tensor) -> bool:
    """Whether ``tensor`` is a torchao ``NF4Tensor`` (never imports torchao itself: without it
    loaded no tensor can be one)."""
    if _api is None and not any(name in sys.modules for name in _NF4_MODULES):
        return False
    return isinstance(tensor, nf4_api().NF4Tensor)


def dequantize(tensor: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """A plain tensor from ``tensor``: NF4 is dequantized, anything else passed through.

    Args:
        tensor (torch.Tensor): an ``NF4Tensor`` or a plain tensor.
        dtype (Optional[torch.dtype]): result dtype; None keeps the nominal dtype (for NF4,
            the dtype it was quantized from).

    Returns:
        torch.Tensor: a plain tensor of ``tensor``'s shape.
    """
    if is_nf4(tensor):
        # NF4Tensor.to(dtype) is torchao's dequantize; plain .to(device) would keep NF4.
        return tensor.to(dtype or tensor.dtype)
    return tensor if dtype is None else tensor.to(dtype)


def quantize_incoming_weight(
    state_dict: dict, key: str, current: torch.Tensor
) -> None:
    """For a ``_load_from_state_dict`` override: replace a full-precision ``state_dict[key]``
    by its NF4 quantization, in ``current``'s dtype and on its device (the source's device if
    ``current`` is on meta), so the plain copy or ``assign=True`` that follows never puts a
    full-precision weight into the model. A missing key, an NF4 value or a shape mismatch
    (which ``load_state_dict`` then reports) is left alone.

    Args:
        state_dict (dict): the dict ``_load_from_state_dict`` received (load_state_dict's own
            copy, not the caller's).
        key (str): the weight's full key.
        current (torch.Tensor): the module's current (NF4) weight.
    """
    src = state_dict.get(key)
    if isinstance(src, torch.Tensor) and not is_nf4(src) and src.shape == current.shape:
        device = src.device if current.is_meta else current.device
        state_dict[key] = to_nf4(src.to(device=device, dtype=current.dtype))
