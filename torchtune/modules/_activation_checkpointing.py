"""Per-layer activation checkpointing, switched on by a recipe."""

import functools
from typing import Tuple, Type

from torch import nn
from torch.utils.checkpoint import checkpoint

from torchtune.modules.transformer import TransformerDecoderLayer


def set_activation_checkpointing(
    model: nn.Module,
    module_types: Tuple[Type[nn.Module], ...] = (TransformerDecoderLayer,),
) -> int:
    """Recompute the activations of every module of ``module_types`` during backward.

    Saves the memory of each layer's intermediate activations at the cost of one more
    forward per layer. The forward is wrapped in place, so parameter and state-dict names
    are unchanged (unlike ``checkpoint_wrapper``, which inserts a prefix). Uses the
    non-reentrant implementation, which supports keyword arguments and frozen inputs.
    Calling it twice is harmless.

    Args:
        model (nn.Module): model to modify in place.
        module_types (Tuple[Type[nn.Module], ...]): module classes to checkpoint.

    Returns:
        int: number of modules wrapped.
    """
    wrapped = 0
    for module in model.modules():
        if isinstance(module, module_types) and not getattr(module, "_checkpointed", False):
            # Instance attribute shadows the class's forward; nn.Module.__call__ picks it up.
            module.forward = functools.partial(checkpoint, module.forward, use_reentrant=False)
            module._checkpointed = True
            wrapped += 1
    return wrapped
