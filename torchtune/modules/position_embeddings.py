"""Rotary positional embeddings (RoPE, Su et al. 2021) in meta-llama's interleaved layout,
with Llama 3.1's frequency scaling as an option."""

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules.rms_norm import at_least_fp32


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's RoPE frequency scaling ("llama3" rope type) for long contexts.

    Each frequency ``theta_j`` is rescaled by its wavelength ``2 pi / theta_j`` relative to the
    pre-training context ``old_context_len``: wavelengths shorter than
    ``old_context_len / high_freq_factor`` are kept, longer than
    ``old_context_len / low_freq_factor`` divided by ``scale_factor``, and in between
    interpolated linearly in ``old_context_len / wavelength``. This is meta-llama's
    ``apply_scaling`` (llama-models ``reference_impl/model.py``) and transformers'
    ``_compute_llama3_parameters``, vectorised. The rule acts on each ``theta_j``, so it is
    the same whether a layout rotates interleaved pairs (ours, Meta's) or halves (HF's).

    Args:
        scale_factor (float): divisor of the low frequencies (8 for 3.1/3.3, 32 for 3.2).
        low_freq_factor (float): ``old_context_len / low_freq_factor`` is the longest
            wavelength that is not fully scaled.
        high_freq_factor (float): ``old_context_len / high_freq_factor`` is the shortest
            wavelength that is scaled at all.
        old_context_len (int): the context length the model was pre-trained with.
    """

    scale_factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    old_context_len: int = 8192

    def __post_init__(self) -> None:
        if self.high_freq_factor <= self.low_freq_factor:
            raise UserValueError(
                f"RoPE scaling needs high_freq_factor ({self.high_freq_factor}) > "
                f"low_freq_factor ({self.low_freq_factor})"
            )

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """Scale the frequencies ``theta`` [h_d/2] (fp32); returns a new tensor."""
        wavelen = 2 * math.pi / theta
        low_freq_wavelen = self.old_context_len / self.low_freq_factor
        high_freq_wavelen = self.old_context_len / self.high_freq_factor
        smooth = (self.old_context_len / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        smoothed = (1 - smooth) * theta / self.scale_factor + smooth * theta
        scaled = torch.where(wavelen > low_freq_wavelen, theta / self.scale_factor, smoothed)
        return torch.where(wavelen < high_freq_wavelen, theta, scaled)


class RotaryPositionalEmbeddings(nn.Module):
    """Rotate interleaved pairs ``(x_{2j}, x_{2j+1})`` of each head by ``pos * theta_j``.

    This is meta-llama/llama's ``apply_rotary_emb`` written with real arithmetic instead of
    ``torch.view_as_complex`` (complex tensors work poorly with ``torch.compile`` and bf16).
    As there, the rotation is computed in fp32 and cast back to the input dtype.
    ``theta_j = base ** (-2j / dim)``, optionally rescaled by ``scaling`` (Llama 3.1+).

    The cos/sin cache is a non-persistent buffer: it never appears in a state dict, and
    after building on the meta device it must be recomputed with ``reset_parameters()``.

    Args:
        dim (int): per-head dimension ``h_d`` (even).
        max_seq_len (int): number of positions to cache.
        base (int): the RoPE base (10000 for Llama 2, 500000 for Llama 3).
        scaling (Optional[Llama3RopeScaling]): frequency scaling; None keeps ``theta_j``.
    """

    def __init__(
        self,
        dim: int,
        max_seq_len: int = 4096,
        base: int = 10_000,
        scaling: Optional[Llama3RopeScaling] = None,
    ) -> None:
        super().__init__()
        if dim % 2:
            raise UserValueError(f"RotaryPositionalEmbeddings needs an even head dim, got {dim}")
        self.dim = dim
        self.max_seq_len = max_seq_len
        self.base = base
        self.scaling = scaling
        self.register_buffer("cache", self._build_cache(), persistent=False)

    def _build_cache(self, device: Optional[torch.device] = None) -> torch.Tensor:
        exponents = torch.arange(0, self.dim, 2, device=device)[: self.dim // 2].float() / self.dim
        theta = 1.0 / (self.base**exponents)  # [h_d/2]
        if self.scaling is not None:
            theta = self.scaling(theta)
        positions = torch.arange(self.max_seq_len, device=device).float()
        angles = torch.outer(positions, theta)  # [max_seq_len, h_d/2]
        return torch.stack([angles.cos(), angles.sin()], dim=-1)  # [max_seq_len, h_d/2, 2]

    def reset_parameters(self) -> None:
        """Recompute the cache in place (e.g. after ``to_empty`` from the meta device)."""
        self.cache = self._build_cache(self.cache.device)

    def forward(self, x: torch.Tensor, input_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): [b, s, n_h, h_d] queries or keys.
            input_pos (Optional[torch.Tensor]): [b, s] (or [s]) position of each token;
                None means positions ``0 .. s-1``.

        Returns:
            torch.Tensor: rotated tensor, shape and dtype of ``x``.
        """
        s = x.size(1)
        rope = self.cache[:s] if input_pos is None else self.cache[input_pos]
        # rope: [s, h_d/2, 2] or [b, s, h_d/2, 2]; add the head dim -> [(b,) s, 1, h_d/2, 2]
        rope = rope.unsqueeze(-3)
        cos, sin = rope[..., 0], rope[..., 1]
        if torch.is_grad_enabled() and x.requires_grad:
            return _RotateFn.apply(x, cos, sin)
        return _rotate(x, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(x0 + i x1) * (cos + i sin) for each pair (x0, x1) of the last dim, as Meta's complex
    multiply, in fp32; written into one output tensor (the four products and the two sums
    of a plain ``torch.stack`` would each be a new tensor)."""
    pairs = at_least_fp32(x).reshape(*x.shape[:-1], -1, 2)  # [b, s, n_h, h_d/2, 2]
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.empty_like(pairs)
    torch.mul(x0, cos, out=out[..., 0]).sub_(x1 * sin)
    torch.mul(x1, cos, out=out[..., 1]).add_(x0 * sin)
    return out.flatten(-2).type_as(x)  # [b, s, n_h, h_d]


class _RotateFn(torch.autograd.Function):
    """``_rotate`` with its gradient: the rotation by the opposite angle."""

    @staticmethod
    def forward(ctx, x, cos, sin):  # type: ignore[override]
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        return _rotate(grad_out, cos, -sin), None, None
