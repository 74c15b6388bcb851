"""The reference model of LoRA preference training: the policy with its adapters off."""

import contextlib
from typing import Iterator

import torch
from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules.peft import AdapterModule


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as its base model: every adapter's update (``LoRALinear``, a mixture's
    stacked ``GroupedExperts`` adapters) is scaled by zero, and gradients are off, until
    the block ends.

    A LoRA output is ``W x + scaling * B A x``, so ``scaling = 0`` leaves exactly the
    frozen base weights: the reference model of DPO without a second copy in memory. (The
    adapters still run, a rank-r cost, and with dropout they still draw random numbers,
    the same ones in every run.) ``LoRALinear`` has no switch of its own, so its
    ``scaling`` attribute is zeroed and restored afterwards, even on an exception.

    Args:
        model (nn.Module): a model holding ``LoRALinear`` modules.

    Yields:
        nn.Module: ``model``.

    Example:
        >>> with disable_adapters(model):
        ...     reference_logits = model(tokens)
    """
    lora_modules = [
        m for m in model.modules()
        if isinstance(m, AdapterModule) and m.adapter_params() and hasattr(m, "scaling")
    ]
    if any(getattr(m, "use_dora", False) for m in lora_modules):
        # DoRA rescales the base output by its trained magnitude even with a zero update.
        raise UserValueError("disable_adapters: DoRA adapters (use_dora=True) cannot be switched off by scaling")
    saved = [m.scaling for m in lora_modules]
    try:
        with torch.no_grad():
            for m in lora_modules:
                m.scaling = 0.0
            yield model
    finally:
        for m, scaling in zip(lora_modules, saved):
            m.scaling = scaling
