"""Activation offloading: keep the tensors saved for backward in CPU memory on a GPU.

During the forward pass autograd saves activations for the backward pass; on a GPU
they are most of the memory a long sequence costs. With offloading each saved tensor is
copied to pinned CPU memory as it is saved and copied back when backward needs it, trading
PCIe traffic for GPU memory. PyTorch's own ``torch.autograd.graph.save_on_cpu`` does the
work; with activation checkpointing only the checkpointed blocks' inputs are saved, so the
two combine. On a CPU device activations already live in CPU memory: nothing to do.
"""

import contextlib
import logging
from typing import ContextManager

import torch
from torch import nn

log = logging.getLogger(__name__)


def get_act_offloading_ctx_manager(model: nn.Module, enable_activation_offloading: bool) -> ContextManager:
    """The context to run the forward pass in (torchtune 0.6.1's name and arguments).

    Args:
        model (nn.Module): the model; its parameters' device decides.
        enable_activation_offloading (bool): the config's ``enable_activation_offloading``.

    Returns:
        ContextManager: ``save_on_cpu(pin_memory=True)`` on a CUDA device when enabled,
        otherwise a context that does nothing.
    """
    if not enable_activation_offloading:
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    if device.type == "cpu":
        log.info(
            "enable_activation_offloading: the model runs on the CPU, where activations "
            "already live in CPU memory; nothing to offload"
        )
        return contextlib.nullcontext()
    return torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda")
