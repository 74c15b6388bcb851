"""A frozen linear layer whose weight is stored as NF4 (the non-adapted layers of QLoRA)."""

import torch
from torch import nn

from torchtune.modules.low_precision._nf4 import (
    check_nf4_size,
    linear_nf4,
    quantize_incoming_weight,
    to_nf4,
)


class FrozenNF4Linear(nn.Module):
    """``y = x dequantize(W)^T (+ b)`` with ``W`` a frozen torchao ``NF4Tensor``.

    Same state-dict names as ``nn.Linear`` (``weight``, ``bias``), so a full-precision
    checkpoint loads into it; the weight is quantized as it loads. QLoRA builders use it for
    the linears of the decoder layers that carry no adapter (as torchtune 0.6.1 does), so
    the frozen model is 4-bit throughout; the bias, if any, stays in the compute dtype.

    Args:
        in_dim (int): input features.
        out_dim (int): output features.
        bias (bool): whether the layer has a bias.

    Raises:
        ValueError: if ``in_dim * out_dim`` is not a multiple of 16384 (NF4's block layout).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = False) -> None:
        super().__init__()
        check_nf4_size(in_dim, out_dim)
        self.in_dim = in_dim
        self.out_dim = out_dim
        base = nn.Linear(in_dim, out_dim, bias=bias)
        self.weight = nn.Parameter(to_nf4(base.weight.detach()), requires_grad=False)
        self.bias = base.bias if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): [..., in_dim].

        Returns:
            torch.Tensor: [..., out_dim].
        """
        out = linear_nf4(x, self.weight)
        return out if self.bias is None else out + self.bias

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        quantize_incoming_weight(state_dict, prefix + "weight", self.weight)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, bias={self.bias is not None}"
