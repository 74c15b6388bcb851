"""Root-mean-square layer norm (Zhang & Sennrich, 2019), as used by Llama."""

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Scale each vector by the inverse of its root mean square, then by a learned ``scale``.

    The normalisation is computed in fp32 and cast back to the input dtype, as
    meta-llama/llama's ``RMSNorm._norm(x.float()).type_as(x)`` does: in bf16 the mean of
    squares loses enough precision to change the logits noticeably.

    Args:
        dim (int): size of the last dimension.
        eps (float): added to the mean square to avoid division by zero.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): input of shape [..., dim].

        Returns:
            torch.Tensor: normalised tensor, same shape and dtype as ``x``.
        """
        x_fp32 = x.float()
        normed = x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)
        # Meta casts back before multiplying by the weight; we do the same for parity.
        return normed.type_as(x) * self.scale
