"""Small helpers (the device, logging), and the dotted paths that published configs name.

Configs written for torchtune name ``torchtune.utils.FullModelMetaCheckpointer`` and
friends; the classes live in ``torchtune.training.checkpointing`` and are re-exported
here on first access, so ``import torchtune.utils`` stays cheap.
"""

from torchtune.utils._device import get_device
from torchtune.utils._logging import get_logger

_CHECKPOINTING_NAMES = (
    "FullModelHFCheckpointer",
    "FullModelMetaCheckpointer",
    "FullModelTorchTuneCheckpointer",
    "ModelType",
)

__all__ = ["get_device", "get_logger", *_CHECKPOINTING_NAMES]


def __getattr__(name: str):
    if name in _CHECKPOINTING_NAMES:
        from torchtune.training import checkpointing

        return getattr(checkpointing, name)
    raise AttributeError(f"module 'torchtune.utils' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_CHECKPOINTING_NAMES))
