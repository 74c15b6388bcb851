"""LoRA: low-rank adapters on a frozen linear layer (Hu et al. 2021)."""

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from torchtune._errors import UserValueError


class LoRALinear(nn.Module):
    """``y = x W^T (+ b) + (alpha / rank) * lora_b(lora_a(dropout(x)))``.

    The base weight keeps the name ``weight`` (so a base checkpoint loads unchanged); only
    ``lora_a`` and ``lora_b`` are adapter parameters. ``lora_b`` starts at zero, so a fresh
    adapter leaves the model's output unchanged; ``lora_a`` uses kaiming-uniform with
    ``a=sqrt(5)`` like nn.Linear and HF peft.

    Args:
        in_dim (int): input features.
        out_dim (int): output features.
        rank (int): r, the adapter's inner dimension.
        alpha (float): scaling numerator; the update is scaled by ``alpha / rank``.
        dropout (float): dropout on the adapter's input while training.
        use_bias (bool): whether the base layer has a bias.

    Raises:
        ValueError: if ``rank`` is not positive.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        if rank <= 0:
            raise UserValueError(f"LoRALinear rank must be positive, got {rank}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        # Base parameters initialised like nn.Linear; normally overwritten by a checkpoint.
        base = nn.Linear(in_dim, out_dim, bias=use_bias)
        self.weight = base.weight
        self.bias = base.bias if use_bias else None
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.lora_a = nn.Linear(in_dim, rank, bias=False)
        self.lora_b = nn.Linear(rank, out_dim, bias=False)
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """Re-initialise the adapter: kaiming-uniform ``lora_a``, zero ``lora_b``."""
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)

    def adapter_params(self) -> List[str]:
        """Names (relative to this module) of the adapter parameters."""
        return ["lora_a.weight", "lora_b.weight"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): [..., in_dim].

        Returns:
            torch.Tensor: [..., out_dim].
        """
        out = F.linear(x, self.weight, self.bias)
        return out + self.scaling * self.lora_b(self.lora_a(self.dropout(x)))

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, rank={self.rank}, alpha={self.alpha}"
