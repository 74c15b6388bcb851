"""The SwiGLU feed-forward block (Shazeer, 2020) used by Llama."""

import torch
import torch.nn.functional as F
from torch import nn


class _SwiGLUDownFn(torch.autograd.Function):
    """``(silu(gate) * up) @ weight.T`` keeping only ``gate`` and ``up`` for backward.

    Autograd on the plain expression also keeps ``silu(gate)`` and the product (the down
    projection's input): two more [.., hidden] tensors per layer, the largest activations
    of a Llama block. Backward recomputes both with two element-wise ops. The gradients
    are computed with the same kernels autograd uses (``silu_backward``, the flattened
    ``mm`` of ``linear``).
    """

    @staticmethod
    def forward(ctx, gate, up, weight):  # type: ignore[override]
        ctx.save_for_backward(gate, up, weight)
        return F.linear(F.silu(gate).mul_(up), weight)  # in place: one [.., hidden] fewer

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        gate, up, weight = ctx.saved_tensors
        need_gate, need_up, need_weight = ctx.needs_input_grad
        silu = F.silu(gate)
        grad_weight = grad_gate = grad_up = None
        flat_grad = grad_out.reshape(-1, grad_out.size(-1))
        if need_weight:
            product = (silu * up).reshape(-1, up.size(-1))
            grad_weight = flat_grad.t().mm(product)
            del product
        if need_gate or need_up:
            grad_product = flat_grad.mm(weight).view(up.shape)
            if need_up:
                grad_up = grad_product * silu
            if need_gate:
                grad_gate = torch.ops.aten.silu_backward(grad_product * up, gate)
        return grad_gate, grad_up, grad_weight


ACTIVATIONS = {
    "silu": F.silu,
    # GeGLU as Gemma uses it (transformers' "gelu_pytorch_tanh").
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class FeedForward(nn.Module):
    """``w2(act(w1(x)) * w3(x))``: w1 is the gate, w3 the up and w2 the down projection;
    ``act`` is SiLU (SwiGLU, Llama and Qwen) or tanh-approximated GELU (GeGLU, Gemma).

    When training with a plain bias-free ``nn.Linear`` as ``w2``, backward recomputes
    ``silu(w1(x)) * w3(x)`` rather than keeping it (``_SwiGLUDownFn``): about a third less
    activation memory per layer, for two element-wise ops. Any other ``w2`` (e.g. a LoRA
    adapter) is called as a module.

    Args:
        w1 (nn.Module): gate projection, d -> hidden.
        w2 (nn.Module): down projection, hidden -> d.
        w3 (nn.Module): up projection, d -> hidden.
        activation (str): ``"silu"`` or ``"gelu_tanh"``.
    """

    def __init__(
        self, *, w1: nn.Module, w2: nn.Module, w3: nn.Module, activation: str = "silu"
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {list(ACTIVATIONS)}")
        self.w1 = w1
        self.w2 = w2
        self.w3 = w3
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): [b, s, d].

        Returns:
            torch.Tensor: [b, s, d].
        """
        gate, up = self.w1(x), self.w3(x)
        if self.activation == "silu":
            if torch.is_grad_enabled() and type(self.w2) is nn.Linear and self.w2.bias is None:
                return _SwiGLUDownFn.apply(gate, up, self.w2.weight)
            return self.w2(F.silu(gate) * up)
        return self.w2(ACTIVATIONS[self.activation](gate) * up)
