"""The device a run asks for, checked against the machine it runs on.

Shipped configs say ``device: auto``: a GPU where there is one, else the CPU. An explicit
device that this machine lacks (``device: cuda`` on a laptop, the default of torchtune
0.6.1's configs) is a one-line error that says what to set instead and whether the CPU
runs bf16 natively, rather than torch's ``Torch not compiled with CUDA enabled`` deep
inside the first tensor move.
"""

import logging
from typing import Optional, Union

import torch

from torchtune._errors import UserValueError

log = logging.getLogger(__name__)

AUTO = "auto"


def cpu_bf16_note() -> str:
    """How this CPU runs bf16, for messages."""
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    if native:
        return "this CPU runs bf16 natively, so dtype bf16 can stay"
    return "bf16 works on this CPU but without native support is slower than fp32: consider dtype=fp32"


def _cuda_missing_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return f"no CUDA GPU is visible (torch {torch.__version__}, CUDA {torch.version.cuda})"


def get_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """The ``torch.device`` for a config's ``device`` value, checked against this machine.

    Args:
        device (Optional[Union[str, torch.device]]): ``"auto"`` or None (a CUDA GPU if one is
            visible, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or any other device
            torch knows.

    Returns:
        torch.device: the device to use.

    Raises:
        UserValueError: the value is not a device, or this machine lacks it; the message
            says what to set instead.

    Example:
        >>> get_device("auto")  # on a machine without a GPU
        device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == AUTO):
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("device auto: no CUDA GPU is visible (%s); running on the CPU", _cuda_missing_reason())
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserValueError(
            f"device: {device!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserValueError(
                f"device: {device} is not available here ({_cuda_missing_reason()}); set "
                f"device=cpu or device=auto ({cpu_bf16_note()})"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise UserValueError(
                f"device: {device} is not available here: this machine has {count} CUDA "
                f"GPU{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1})"
            )
    elif resolved.type not in ("cpu", "meta"):
        try:
            torch.empty(0, device=resolved)
        except (RuntimeError, AssertionError) as err:
            raise UserValueError(
                f"device: {device} is not available here ({str(err).splitlines()[0]}); set "
                "device=cpu or device=auto"
            ) from None
    return resolved
