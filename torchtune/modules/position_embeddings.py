"""Rotary positional embeddings (RoPE, Su et al. 2021) in meta-llama's interleaved layout,
with the frequency scalings of Hugging Face's ``rope_scaling`` ("linear", "llama3",
"yarn") and partial rotary (only the first features of each head rotate) as options."""

import math
from dataclasses import dataclass
from typing import Optional, Protocol

import torch
from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules.rms_norm import at_least_fp32


class RopeScaling(Protocol):
    """What ``RotaryPositionalEmbeddings`` asks of a frequency scaling.

    ``scale`` maps the unscaled frequencies ``theta_j = base ** (-2j / rotary_dim)``
    [rotary_dim/2] to the ones used; ``attention_scaling`` multiplies cos and sin (YaRN's
    attention factor; 1.0 for the others), as transformers' rotary modules do.
    """

    @property
    def attention_scaling(self) -> float: ...

    def scale(self, theta: torch.Tensor, base: float, rotary_dim: int) -> torch.Tensor: ...


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise UserValueError(f"RoPE scaling {name} must be positive, got {value}")


@dataclass(frozen=True)
class LinearRopeScaling:
    """Position interpolation ("linear" rope type, kaiokendev / Chen et al. 2023): every
    frequency divided by ``factor``, i.e. positions squeezed ``factor`` times.
    transformers' ``_compute_linear_scaling_rope_parameters``.

    Args:
        factor (float): the divisor (the context extension ratio).
    """

    factor: float

    def __post_init__(self) -> None:
        _require_positive("factor", self.factor)

    @property
    def attention_scaling(self) -> float:
        return 1.0

    def scale(self, theta: torch.Tensor, base: float, rotary_dim: int) -> torch.Tensor:
        """``theta`` [rotary_dim/2] divided by ``factor``; ``base`` and ``rotary_dim`` unused."""
        return theta / self.factor


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

    @property
    def attention_scaling(self) -> float:
        return 1.0

    def scale(self, theta: torch.Tensor, base: float, rotary_dim: int) -> torch.Tensor:
        """``self(theta)``: the rule needs neither ``base`` nor ``rotary_dim``."""
        return self(theta)


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's ``0.1 * mscale * ln(factor) + 1`` (eq. 21), 1 when not extending."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


@dataclass(frozen=True)
class YarnRopeScaling:
    """YaRN ("yarn" rope type, Peng et al. 2023, arXiv:2309.00071) as transformers'
    ``_compute_yarn_parameters`` computes it.

    Frequencies that turn more than ``beta_fast`` times within the pre-training context
    ``original_max_position_embeddings`` are kept, those turning fewer than ``beta_slow``
    times are divided by ``factor``, and in between the two are blended by a linear ramp
    over the pair index ``j`` (the ramp's ends are the fractional indices of those
    wavelengths, widened to whole indices when ``truncate``). cos and sin are then both
    multiplied by ``attention_scaling``, so that q.k grows by its square (the paper's
    "temperature"): ``attention_factor`` when given, otherwise ``0.1 ln(factor) + 1``, or
    DeepSeek's ratio ``mscale(factor, mscale) / mscale(factor, mscale_all_dim)`` when both
    are set.

    Args:
        factor (float): context extension ratio.
        original_max_position_embeddings (int): the pre-training context length.
        beta_fast (float): rotations above which a frequency is kept.
        beta_slow (float): rotations below which a frequency is fully interpolated.
        mscale (Optional[float]): DeepSeek's numerator mscale (needs ``mscale_all_dim``).
        mscale_all_dim (Optional[float]): DeepSeek's denominator mscale.
        attention_factor (Optional[float]): explicit cos/sin multiplier; None derives it.
        truncate (bool): round the ramp's ends out to whole pair indices.
    """

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: Optional[float] = None
    mscale_all_dim: Optional[float] = None
    attention_factor: Optional[float] = None
    truncate: bool = True

    def __post_init__(self) -> None:
        _require_positive("factor", self.factor)
        _require_positive("original_max_position_embeddings", self.original_max_position_embeddings)
        _require_positive("beta_fast", self.beta_fast)
        _require_positive("beta_slow", self.beta_slow)
        if self.attention_factor is not None:
            _require_positive("attention_factor", self.attention_factor)

    @property
    def attention_scaling(self) -> float:
        if self.attention_factor is not None:
            return float(self.attention_factor)
        # transformers tests truthiness, so a 0 mscale counts as unset
        if self.mscale and self.mscale_all_dim:
            return _yarn_mscale(self.factor, self.mscale) / _yarn_mscale(
                self.factor, self.mscale_all_dim
            )
        return _yarn_mscale(self.factor)

    def _correction_index(self, rotations: float, base: float, rotary_dim: int) -> float:
        """The fractional pair index whose frequency turns ``rotations`` times within the
        pre-training context (solve ``L * base ** (-2j / r) = 2 pi rotations`` for j)."""
        wavelength = self.original_max_position_embeddings / (rotations * 2 * math.pi)
        return rotary_dim * math.log(wavelength) / (2 * math.log(base))

    def scale(self, theta: torch.Tensor, base: float, rotary_dim: int) -> torch.Tensor:
        """Blend of ``theta`` [rotary_dim/2] (kept) and ``theta / factor`` over a ramp."""
        low = self._correction_index(self.beta_fast, base, rotary_dim)
        high = self._correction_index(self.beta_slow, base, rotary_dim)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, rotary_dim - 1)
        if low == high:
            high += 0.001  # transformers' guard against a zero-width ramp
        index = torch.arange(rotary_dim // 2, dtype=torch.float32, device=theta.device)
        ramp = ((index - low) / (high - low)).clamp(0, 1)
        # Written as transformers writes it (1 - (1 - ramp) is not ramp in fp32).
        keep = 1 - ramp
        return theta / self.factor * (1 - keep) + theta * keep


def rope_frequencies(
    rotary_dim: int,
    base: float,
    scaling: Optional[RopeScaling] = None,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """The angle per position of each rotating pair, in fp32.

    Args:
        rotary_dim (int): features that rotate (even).
        base (float): the RoPE base.
        scaling (Optional[RopeScaling]): frequency scaling; None keeps
            ``theta_j = base ** (-2j / rotary_dim)``.
        device (Optional[torch.device]): where to build them.

    Returns:
        torch.Tensor: [rotary_dim/2] frequencies (transformers' ``inv_freq``).
    """
    exponents = torch.arange(0, rotary_dim, 2, device=device).float() / rotary_dim  # [r/2]
    theta = 1.0 / (base**exponents)  # [r/2]
    return theta if scaling is None else scaling.scale(theta, base, rotary_dim)


class RotaryPositionalEmbeddings(nn.Module):
    """Rotate interleaved pairs ``(x_{2j}, x_{2j+1})`` of each head by ``pos * theta_j``.

    This is meta-llama/llama's ``apply_rotary_emb`` written with real arithmetic instead of
    ``torch.view_as_complex`` (complex tensors work poorly with ``torch.compile`` and bf16).
    As there, the rotation is computed in fp32 and cast back to the input dtype.
    ``theta_j = base ** (-2j / rotary_dim)``, optionally rescaled by ``scaling``, whose
    ``attention_scaling`` (YaRN's) multiplies the cached cos and sin, as transformers does.

    Partial rotary (transformers' ``partial_rotary_factor``): only the first ``rotary_dim``
    features of each head rotate, as ``rotary_dim/2`` interleaved pairs
    ``(x_0, x_1), (x_2, x_3), ...``; features ``rotary_dim .. h_d-1`` pass through unchanged
    (not even scaled). Hugging Face rotates halves of those same first ``rotary_dim``
    features, pairing ``(x_j, x_{j + rotary_dim/2})``, so a key map that brings an HF
    checkpoint to this layout must permute, within each head, only the first ``rotary_dim``
    rows of q and k (row ``2j`` <- HF row ``j``, row ``2j+1`` <- HF row
    ``j + rotary_dim/2``) and leave the rest in place.

    The cos/sin cache is a non-persistent buffer: it never appears in a state dict, and
    after building on the meta device it must be recomputed with ``reset_parameters()``.

    Args:
        dim (int): per-head dimension ``h_d`` (even).
        max_seq_len (int): number of positions to cache.
        base (float): the RoPE base (10000 for Llama 2, 500000 for Llama 3).
        scaling (Optional[RopeScaling]): ``LinearRopeScaling``, ``Llama3RopeScaling`` or
            ``YarnRopeScaling``; None keeps ``theta_j``.
        rotary_dim (Optional[int]): features of each head that rotate (even, at most
            ``dim``); None rotates all ``dim``.
    """

    def __init__(
        self,
        dim: int,
        max_seq_len: int = 4096,
        base: float = 10_000,
        scaling: Optional[RopeScaling] = None,
        rotary_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        if dim % 2:
            raise UserValueError(f"RotaryPositionalEmbeddings needs an even head dim, got {dim}")
        rotary_dim = dim if rotary_dim is None else rotary_dim
        if rotary_dim % 2 or not 0 < rotary_dim <= dim:
            raise UserValueError(
                f"RoPE rotary_dim ({rotary_dim}) must be even and in 2..{dim} (the head dim)"
            )
        self.dim = dim
        self.rotary_dim = rotary_dim
        self.max_seq_len = max_seq_len
        self.base = base
        self.scaling = scaling
        self.register_buffer("cache", self._build_cache(), persistent=False)

    def _build_cache(self, device: Optional[torch.device] = None) -> torch.Tensor:
        theta = rope_frequencies(self.rotary_dim, self.base, self.scaling, device)  # [r/2]
        positions = torch.arange(self.max_seq_len, device=device).float()
        angles = torch.outer(positions, theta)  # [max_seq_len, r/2]
        cache = torch.stack([angles.cos(), angles.sin()], dim=-1)  # [max_seq_len, r/2, 2]
        attention_scaling = 1.0 if self.scaling is None else self.scaling.attention_scaling
        # The rotation becomes a rotation times attention_scaling: q.k gains its square.
        return cache if attention_scaling == 1.0 else cache * attention_scaling

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
        # rope: [s, r/2, 2] or [b, s, r/2, 2]; add the head dim -> [(b,) s, 1, r/2, 2]
        rope = rope.unsqueeze(-3)
        cos, sin = rope[..., 0], rope[..., 1]
        if self.rotary_dim == self.dim:
            return _rotate_any(x, cos, sin)
        rotated = _rotate_any(x[..., : self.rotary_dim], cos, sin)  # [b, s, n_h, r]
        return torch.cat([rotated, x[..., self.rotary_dim :]], dim=-1)  # [b, s, n_h, h_d]


def _rotate_any(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``_rotate``, through its own backward when a gradient is wanted."""
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
