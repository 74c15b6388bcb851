"""LoRA (Hu et al. 2021) on a frozen linear layer, with two options: a base weight stored
as NF4 (QLoRA, Dettmers et al. 2023) and weight-decomposed updates (DoRA, Liu et al. 2024)."""

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules.low_precision import (
    check_nf4_size,
    dequantize,
    linear_nf4,
    quantize_incoming_weight,
    to_nf4,
)


class LoRALinear(nn.Module):
    """``y = x W^T (+ b) + (alpha / rank) * lora_b(lora_a(dropout(x)))``, optionally DoRA.

    The base weight keeps the name ``weight`` (so a base checkpoint loads unchanged); the
    adapter parameters are ``lora_a.weight``, ``lora_b.weight`` and, with DoRA, ``magnitude``
    (torchtune 0.6.1's ``DoRALinear`` names). ``lora_b`` starts at zero, so a fresh adapter
    leaves the output unchanged; ``lora_a`` uses kaiming-uniform with ``a=sqrt(5)`` like
    nn.Linear and HF peft.

    ``quantize_base``: ``weight`` is a frozen torchao ``NF4Tensor`` and the base matmul
    dequantizes it on the fly. Loading a state dict quantizes the incoming full-precision
    weight module by module (``_load_from_state_dict``), so the full-precision model never
    exists on the device. Adapters and bias stay in the compute dtype.

    ``use_dora``: as peft's ``LoraConfig(use_dora=True)``::

        V = W + s * B @ A,   y = x ((m / ||V||_row)[:, None] * V)^T + b

    computed as peft does, ``base(x) + (m/||V|| - 1) * x W^T + (m/||V||) * s * B A x``, with
    ``||V||`` detached (DoRA section 4.3) and, when dropout is active, dropout applied to the
    ``x`` of the last two terms only. ``magnitude`` must equal ``||V||`` before training:
    call ``initialize_dora_magnitude()`` after the base weight (and before an adapter
    checkpoint, which brings its own) is loaded.

    Args:
        in_dim (int): input features.
        out_dim (int): output features.
        rank (int): r, the adapter's inner dimension.
        alpha (float): scaling numerator; the update is scaled by ``alpha / rank``.
        dropout (float): dropout on the adapter's input while training.
        use_bias (bool): whether the base layer has a bias.
        quantize_base (bool): store the base weight as NF4 (QLoRA).
        use_dora (bool): add the DoRA magnitude vector.

    Raises:
        ValueError: if ``rank`` is not positive, or a quantized weight's size is not a
            multiple of 16384 (NF4's block layout).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        use_bias: bool = False,
        quantize_base: bool = False,
        use_dora: bool = False,
    ) -> None:
        super().__init__()
        if rank <= 0:
            raise UserValueError(f"LoRALinear rank must be positive, got {rank}")
        if quantize_base:
            check_nf4_size(in_dim, out_dim)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.quantize_base = quantize_base
        self.use_dora = use_dora
        # Base parameters initialised like nn.Linear; normally overwritten by a checkpoint.
        base = nn.Linear(in_dim, out_dim, bias=use_bias)
        if quantize_base:
            self.weight = nn.Parameter(to_nf4(base.weight.detach()), requires_grad=False)
        else:
            self.weight = base.weight
        self.bias = base.bias if use_bias else None
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.lora_a = nn.Linear(in_dim, rank, bias=False)
        self.lora_b = nn.Linear(rank, out_dim, bias=False)
        if use_dora:
            self.magnitude = nn.Parameter(torch.empty(out_dim))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """Re-initialise the adapter: kaiming-uniform ``lora_a``, zero ``lora_b`` and, with
        DoRA, the magnitude from the current base weight (see ``initialize_dora_magnitude``)."""
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)
        if self.use_dora and not self.magnitude.is_meta and not self.weight.is_meta:
            self.initialize_dora_magnitude()

    @torch.no_grad()
    def initialize_dora_magnitude(self) -> None:
        """Set ``magnitude`` to the row norms of ``W + s * B @ A``, so DoRA starts from the
        same function as LoRA. Call it once the base weight holds the checkpoint's values.

        Raises:
            RuntimeError: if a parameter is still on the meta device.
        """
        if not self.use_dora:
            return
        if self.weight.is_meta or self.lora_a.weight.is_meta or self.magnitude.is_meta:
            raise RuntimeError(
                "initialize_dora_magnitude: load the base weight and materialise the "
                "adapter (off the meta device) first"
            )
        norm = self._weight_norm(self.lora_a.weight.dtype)
        self.magnitude.copy_(norm.to(self.magnitude.dtype))

    def _weight_norm(self, dtype: torch.dtype) -> torch.Tensor:
        """Row norms ``||W + s * B @ A||`` [out_dim] in ``dtype``, without autograd: DoRA treats
        them as constants. Same op order as peft's ``DoraLinearLayer.get_weight_norm``."""
        with torch.no_grad():
            lora_weight = (self.lora_b.weight @ self.lora_a.weight).to(dtype)  # [out, in]
            weight = dequantize(self.weight, dtype) + self.scaling * lora_weight
            return torch.linalg.norm(weight, dim=1).to(dtype)

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T`` without bias: [..., in_dim] -> [..., out_dim]."""
        if self.quantize_base:
            return linear_nf4(x, self.weight)
        return F.linear(x, self.weight)

    def adapter_params(self) -> List[str]:
        """Names (relative to this module) of the adapter parameters."""
        names = ["lora_a.weight", "lora_b.weight"]
        return names + ["magnitude"] if self.use_dora else names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): [..., in_dim].

        Returns:
            torch.Tensor: [..., out_dim].
        """
        if not self.use_dora and not self.quantize_base:
            out = F.linear(x, self.weight, self.bias)
            return out + self.scaling * self.lora_b(self.lora_a(self.dropout(x)))
        base = self._base(x)
        out = base if self.bias is None else base + self.bias
        if not self.use_dora:
            return out + self.scaling * self.lora_b(self.lora_a(self.dropout(x)))
        # peft reuses the base product unless dropout is live, in which case the DoRA
        # terms see the dropped-out input (lora/variants.py DoraLinearVariant.forward).
        if self.training and isinstance(self.dropout, nn.Dropout):
            x = self.dropout(x)
            base = self._base(x)
        scale = self.magnitude / self._weight_norm(x.dtype)  # [out]
        lora_out = self.lora_b(self.lora_a(x))
        return out + (scale - 1) * base + scale * lora_out * self.scaling

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if self.quantize_base:
            quantize_incoming_weight(state_dict, prefix + "weight", self.weight)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        extra = "".join(
            [", quantize_base=True" if self.quantize_base else "",
             ", use_dora=True" if self.use_dora else ""]
        )
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, rank={self.rank}, "
            f"alpha={self.alpha}{extra}"
        )
