"""In-place gradient scaling, used to normalise gradients after accumulation."""

from typing import Union

import torch
from torch import nn


def scale_grads_(model: nn.Module, scaler: Union[torch.Tensor, float]) -> None:
    """Multiply every parameter gradient of ``model`` by ``scaler``, in place.

    Recipes sum the loss over a gradient-accumulation window and then divide the gradients by
    the number of target tokens in the whole window, so that batch 4 x 1 equals batch 2 x 2.

    Args:
        model (nn.Module): the model; parameters without a gradient are skipped.
        scaler (Union[torch.Tensor, float]): the factor; a tensor is moved to each grad's device.
    """
    for p in model.parameters():
        if p.grad is None:
            continue
        if isinstance(scaler, torch.Tensor) and scaler.device != p.grad.device:
            scaler = scaler.to(p.grad.device)
        p.grad.mul_(scaler)
