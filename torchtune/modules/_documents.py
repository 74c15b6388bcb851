"""Documents: rows that hold several documents, attended without an S x S mask.

Packed and padding-free rows put documents end to end; a token may attend only to earlier
tokens of its own document. Their boundaries travel as document lengths (``seq_lens``,
``[b, n]``, zero-padded per row), and attention runs document by document
(``_attention_kernels.document_attention``), so a step costs time and memory in proportion
to its tokens, never to the square of a row's length.

This module holds the bookkeeping (``Documents``) and what decides whether CUDA's
``varlen_attn`` (FlashAttention's variable-length kernel) can serve a batch: one call over
every document of the batch, from cumulative offsets; no mask, no padding, no compilation.
Elsewhere each document runs as a plain causal row: on CPU this measured faster than the
alternatives torch offers there (nested-tensor SDPA has no CPU kernel in torch 2.13, and
FlexAttention compiles per row length).
"""

import functools
import inspect
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch


@functools.lru_cache(maxsize=None)
def varlen_arguments(
    fn: Callable, gqa: bool, window: Optional[int] = None, scale: Optional[float] = None
) -> Optional[Tuple[dict, bool]]:
    """The keywords that ask ``fn`` (a ``varlen_attn``) for causal attention (within a
    sliding ``window`` of keys, itself included, and with ``scale`` on q.k when given), and
    whether it takes grouped kv heads itself; None if ``fn`` cannot be asked for that.

    The signature moved between releases: torch 2.9-2.11 take ``is_causal`` and no
    ``enable_gqa`` (so no window); later ones ``window_size=(left, right)`` and
    ``enable_gqa``. FlashAttention's ``window_size=(w - 1, 0)`` lets query i see keys
    ``i - w + 1 .. i``: the ``w`` keys of Hugging Face's ``sliding_window=w``.
    """
    params = inspect.signature(fn).parameters
    if "window_size" in params:
        kwargs: dict = {"window_size": (-1 if window is None else window - 1, 0)}
    elif "is_causal" in params and window is None:
        kwargs = {"is_causal": True}
    else:
        return None
    if scale is not None:
        if "scale" not in params:
            return None
        kwargs["scale"] = scale
    native_gqa = "enable_gqa" in params
    if gqa and native_gqa:
        kwargs["enable_gqa"] = True
    return kwargs, native_gqa


def load_varlen_attn() -> Optional[Callable]:
    """``torch.nn.attention.varlen.varlen_attn``, or None where torch lacks it (< 2.9).

    Imported on first use, on CUDA only: the import pulls in torch's compiler stack
    (about 1 s and 70 MB), which a CPU run has no use for.
    """
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # pragma: no cover - depends on the torch version
        return None
    return varlen_attn


@dataclass(frozen=True)
class Documents:
    """Where each row's documents lie: built once per forward, used by every layer.

    Attributes:
        lengths (List[List[int]]): per row, the lengths of its documents (zeros dropped),
            summing to the row's length.
        cu_seqlens (torch.Tensor): int32 ``[n_docs + 1]``, offsets of the documents in the
            flattened ``[b * s]`` token order (what ``varlen_attn`` takes).
        max_len (int): the longest document.
    """

    lengths: List[List[int]]
    cu_seqlens: torch.Tensor
    max_len: int

    @classmethod
    def from_seq_lens(cls, seq_lens: torch.Tensor, seq_len: int) -> "Documents":
        """Read ``seq_lens`` ``[b, n]`` (document lengths per row, zero-padded).

        Raises:
            ValueError: if a row's lengths do not sum to ``seq_len`` or one is negative.
        """
        rows = [[int(n) for n in row if n] for row in seq_lens.tolist()]
        for i, row in enumerate(rows):
            if sum(row) != seq_len or min(row, default=0) < 0:
                raise ValueError(
                    f"seq_lens row {i} is {row}: document lengths must be >= 0 and sum to "
                    f"the row length {seq_len}"
                )
        flat = [n for row in rows for n in row]
        cu = torch.tensor([0] + flat, dtype=torch.int32).cumsum(0, dtype=torch.int32)
        return cls(rows, cu.to(seq_lens.device), max(flat, default=0))


def uses_varlen(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether ``varlen_attn`` serves ``q`` ``[b, s, n_h, h_d]`` (see the module docstring)."""
    h_d = q.shape[-1]
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and dropout_p == 0.0
        and h_d % 8 == 0
        and h_d <= 256
        and torch.cuda.get_device_capability(q.device) >= (8, 0)  # FlashAttention 2 and up
        and load_varlen_attn() is not None
        and varlen_arguments(load_varlen_attn(), gqa=False) is not None
    )


def block_causal_from_seq_lens(seq_lens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The dense bool ``[b, s, s]`` mask of ``seq_lens`` (for torch.compile, which cannot
    trace the per-document loop: it costs S x S, as it says)."""
    doc = torch.repeat_interleave(
        torch.arange(seq_lens.shape[1], device=seq_lens.device).expand_as(seq_lens).reshape(-1),
        seq_lens.reshape(-1),
    ).view(seq_lens.shape[0], seq_len)  # [b, s] document index of each token
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=seq_lens.device).tril()
    return (doc[:, :, None] == doc[:, None, :]) & causal
