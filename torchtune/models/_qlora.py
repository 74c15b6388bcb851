"""The ``qlora_<family>_<size>`` builders: a LoRA model builder with its base quantized."""

from functools import partial
from typing import Callable


def qlora_builder(lora_builder: Callable) -> partial:
    """``lora_builder`` with ``quantize_base=True`` (QLoRA, Dettmers et al. 2023): every
    frozen linear of the decoder layers stores its weight as NF4 (torchao), quantized as the
    checkpoint loads. A ``functools.partial``, as torchtune 0.6.1's ``qlora_*`` builders.

    Args:
        lora_builder (Callable): a ``lora_<family>_<size>`` model builder.

    Returns:
        partial: the builder, with the same other arguments.
    """
    builder = partial(lora_builder, quantize_base=True)
    builder.__doc__ = (
        f"``{lora_builder.__name__}`` with ``quantize_base=True`` (QLoRA: NF4 base weights)."
    )
    return builder
