"""Root-mean-square layer norm (Zhang & Sennrich, 2019), as used by Llama."""

import torch
from torch import nn


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32, or as it is if wider (a float64 model, the tests' exact reference)."""
    return x if x.dtype == torch.float64 else x.float()


def _normalise(
    x: torch.Tensor, scale: torch.Tensor, eps: float, offset: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised ``x`` and ``rstd = rsqrt(mean(x^2) + eps)``, computed in fp32.

    ``offset == 0``: ``(x * rstd).type_as(x) * scale`` (Meta's Llama casts back before
    multiplying by the weight). ``offset != 0``: ``(x * rstd * (offset + scale)).type_as(x)``
    with the sum and product in fp32, Gemma's order: in bf16, ``1 + w`` rounded to bf16
    would lose the small learned deviations the weight holds.
    """
    x_fp32 = at_least_fp32(x)
    rstd = torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + eps)
    if offset:
        return (x_fp32 * rstd * (at_least_fp32(scale) + offset)).type_as(x), rstd
    # In place: one [.., d] tensor fewer.
    return (x_fp32 * rstd).type_as(x).mul_(scale), rstd


class _RMSNormFn(torch.autograd.Function):
    """``_normalise`` keeping only ``x`` and the per-row ``rsqrt`` for backward.

    Autograd on the plain expression also keeps the normalised ``x`` (one more [.., d]
    tensor per norm, two per transformer layer); it is recomputed here from ``x`` and
    ``rstd``, an element-wise product.
    """

    @staticmethod
    def forward(ctx, x, scale, eps: float, offset: float):  # type: ignore[override]
        out, rstd = _normalise(x, scale, eps, offset)
        ctx.save_for_backward(x, rstd, scale)
        ctx.offset = offset
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, rstd, scale = ctx.saved_tensors
        offset = ctx.offset
        x_fp32 = at_least_fp32(x)
        grad_x = grad_scale = None
        if offset:  # everything in fp32, as the forward
            grad_out = at_least_fp32(grad_out)
            factor = at_least_fp32(scale) + offset
        else:
            factor = scale
        if ctx.needs_input_grad[1]:
            normed = x_fp32 * rstd if offset else (x_fp32 * rstd).type_as(x)
            grad_scale = (grad_out * normed).reshape(-1, normed.size(-1)).sum(0).to(scale.dtype)
        if ctx.needs_input_grad[0]:
            grad_normed = at_least_fp32(grad_out * factor)
            # d/dx of x * rstd(x), with d rstd / dx = -rstd^3 * x / dim
            dot = (grad_normed * x_fp32).mean(-1, keepdim=True)
            grad_x = (rstd * (grad_normed - x_fp32 * (rstd * rstd * dot))).type_as(x)
        return grad_x, grad_scale, None, None


class RMSNorm(nn.Module):
    """Scale each vector by the inverse of its root mean square, then by a learned ``scale``.

    The normalisation is computed in fp32 and cast back to the input dtype, as
    meta-llama/llama's ``RMSNorm._norm(x.float()).type_as(x)`` does: in bf16 the mean of
    squares loses enough precision to change the logits noticeably. When training, backward
    recomputes the normalised input instead of keeping it (``_RMSNormFn``).

    With ``offset=1.0`` the learned weight multiplies as ``1 + scale`` (Gemma's form: the
    stored weight starts at zero and is the deviation from one); the state dict holds the
    stored weight as ``scale`` either way.

    Args:
        dim (int): size of the last dimension.
        eps (float): added to the mean square to avoid division by zero.
        offset (float): added to ``scale`` before multiplying (0.0 or 1.0).
    """

    def __init__(self, dim: int, eps: float = 1e-6, offset: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.offset = offset
        self.scale = nn.Parameter(torch.full((dim,), 1.0 - offset))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): input of shape [..., dim].

        Returns:
            torch.Tensor: normalised tensor, same shape and dtype as ``x``.
        """
        if torch.is_grad_enabled() and (x.requires_grad or self.scale.requires_grad):
            return _RMSNormFn.apply(x, self.scale, self.eps, self.offset)
        return _normalise(x, self.scale, self.eps, self.offset)[0]

    def reset_parameters(self) -> None:
        """The weight that makes the norm multiply by one."""
        nn.init.constant_(self.scale, 1.0 - self.offset)

    def extra_repr(self) -> str:
        return f"{self.scale.numel()}, eps={self.eps}" + (f", offset={self.offset}" if self.offset else "")
