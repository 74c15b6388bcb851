"""One attention entry point, ``attend``, and the kernels it chooses between.

Every kernel computes the same thing (``eager_attention`` writes it out and is the test
reference): scores ``scale * q.k``, soft-capped to ``softcap * tanh(scores / softcap)``,
masked, softmax in fp32, dropout, times v. The mask is causal, or the caller's, or the
documents of each row; a sliding window of ``w`` further limits a query at index i to keys
at indices j with ``i - w < j <= i``: ``w`` tokens, itself included (Hugging Face's
``sliding_window_causal_mask_function``, Mistral's and Gemma's ``sliding_window``).

Kernels, as ``attend`` picks them:

========================================  =============================================
case                                       kernel
========================================  =============================================
no window, no soft-cap                     ``F.scaled_dot_product_attention`` (causal or
                                           the caller's mask; documents: see below)
documents                                  ``document_attention``: CUDA ``varlen_attn``
                                           (window through ``window_size`` where torch's
                                           signature has it; no soft-cap), else per
                                           document, each document as a plain row
window or soft-cap, CUDA, no dropout       FlexAttention, compiled: soft-cap as a
                                           ``score_mod``, causal/window/mask/documents as
                                           a block mask (only the blocks inside the window
                                           are computed)
window or soft-cap, elsewhere              ``banded_attention``: query blocks, each against
                                           only the keys its window reaches; SDPA with a
                                           bool mask per block, or ``eager_attention`` per
                                           block with a soft-cap
========================================  =============================================

With a window every kernel costs O(s * w) time and memory, apart from an explicit
``[b, s, s_kv]`` mask, which is already S x S. FlexAttention is CUDA only: on CPU in
torch 2.13 it compiles for about 15 s per shape, and uncompiled it materialises all scores.
"""

import functools
import math
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from torchtune.modules import _documents
from torchtune.modules._documents import Documents

# Queries per block of ``banded_attention`` (at least the window): the scores of one block,
# [b, n_h, block, block + w], are its largest tensor.
QUERY_BLOCK = 256


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    documents: Optional[Documents] = None,
    q_idx: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    window: Optional[int] = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention of q over k, v through the best kernel for the case (module docstring).

    Args:
        q (torch.Tensor): ``[b, n_h, s, h_d]``, positions already applied.
        k (torch.Tensor): ``[b, n_kv, s_kv, h_d]``; ``n_kv`` divides ``n_h`` (GQA).
        v (torch.Tensor): ``[b, n_kv, s_kv, h_d]``.
        mask (Optional[torch.Tensor]): bool ``[b, s, s_kv]``, True = may attend. None means
            causal.
        documents (Optional[Documents]): the rows hold several documents (``s == s_kv``);
            attention stays inside each one. Not with ``mask`` or ``q_idx``.
        q_idx (Optional[torch.Tensor]): ``[b, s]`` or ``[s]``, the key index (KV-cache slot)
            of each query, for the window; None means ``0 .. s-1``.
        scale (Optional[float]): factor on q.k; None means ``1 / sqrt(h_d)``.
        softcap (Optional[float]): scores become ``softcap * tanh(scores / softcap)``.
        window (Optional[int]): keys at ``i - window < j <= i`` only (with ``mask``: and
            where the mask allows).
        dropout_p (float): dropout on the attention weights.

    Returns:
        torch.Tensor: ``[b, n_h, s, h_d]``.
    """
    if documents is not None:
        if mask is not None or q_idx is not None:
            raise ValueError("documents cannot be combined with a mask or a KV cache")
        return document_attention(
            q, k, v, documents, dropout_p, scale=scale, softcap=softcap, window=window
        )
    if window is not None and mask is None and window >= k.shape[2]:
        window = None  # every key a causal query sees is inside the window
    if window is None and softcap is None:
        k, v = repeat_kv(k, v, q.shape[1])  # [b, n_h, s_kv, h_d]
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if mask is None else mask[:, None, :, :],  # [b, 1, s, s_kv]
            dropout_p=dropout_p,
            is_causal=mask is None,
            scale=scale,
        )  # [b, n_h, s, h_d]
    if uses_flex(q, dropout_p):
        return flex_masked_attention(
            q, k, v, mask=mask, q_idx=q_idx, scale=scale, softcap=softcap, window=window
        )
    return banded_attention(
        q, k, v, mask=mask, q_idx=q_idx, scale=scale, softcap=softcap, window=window,
        dropout_p=dropout_p, block_size=max(window or 0, QUERY_BLOCK),
    )


def repeat_kv(k: torch.Tensor, v: torch.Tensor, n_h: int) -> tuple:
    """Repeat each kv head of ``[b, n_kv, s, h_d]`` for its group of query heads (Meta's
    ``repeat_kv``), giving ``[b, n_h, s, h_d]``; no copy without GQA."""
    group = n_h // k.shape[1]
    if group == 1:
        return k, v
    return k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention written out, scores materialised: the reference the other kernels meet.

    Scores, scale and soft-cap are computed in at least fp32 (float64 stays float64), as
    is the softmax (Gemma 2 and Hugging Face's eager path do the same). A query that may
    attend to nothing gets zeros, as SDPA gives it.

    Args:
        q (torch.Tensor): ``[b, n_h, s, h_d]``.
        k (torch.Tensor): ``[b, n_kv, s_kv, h_d]``.
        v (torch.Tensor): ``[b, n_kv, s_kv, h_d]``.
        mask (Optional[torch.Tensor]): bool, broadcastable to ``[b, n_h, s, s_kv]``, True =
            may attend. None means every key (no causal mask: pass one).
        scale (Optional[float]): factor on q.k; None means ``1 / sqrt(h_d)``.
        softcap (Optional[float]): scores become ``softcap * tanh(scores / softcap)``.
        dropout_p (float): dropout on the attention weights.

    Returns:
        torch.Tensor: ``[b, n_h, s, h_d]`` in the dtype of v.
    """
    k, v = repeat_kv(k, v, q.shape[1])  # [b, n_h, s_kv, h_d]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    compute = torch.promote_types(q.dtype, torch.float32)
    scores = (q @ k.transpose(-1, -2)).to(compute) * scale  # [b, n_h, s, s_kv]
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # not NaN
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights.to(v.dtype) @ v  # [b, n_h, s, h_d]


def banded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    q_idx: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    window: Optional[int] = None,
    dropout_p: float = 0.0,
    block_size: int = QUERY_BLOCK,
) -> torch.Tensor:
    """Attention over blocks of queries, each against only the keys it may reach.

    A block of queries at indices ``[lo_q, hi_q]`` can see keys ``(lo_q - w, hi_q]`` only,
    so it costs ``block x (block + w)``, and the whole row ``O(s * (block + w))`` instead
    of ``O(s * s_kv)``. Each block runs SDPA with a bool mask, or ``eager_attention`` when
    there is a soft-cap (SDPA has no hook for it).

    Args:
        q, k, v, mask, q_idx, scale, softcap, window, dropout_p: as ``attend``. Without a
            window the block spans every key a query may see (causal, or all with a mask).
        block_size (int): queries per block.

    Returns:
        torch.Tensor: ``[b, n_h, s, h_d]``.
    """
    s, s_kv = q.shape[2], k.shape[2]
    k, v = repeat_kv(k, v, q.shape[1])  # [b, n_h, s_kv, h_d]
    causal = mask is None or window is not None
    outs: List[torch.Tensor] = []
    for start in range(0, s, block_size):
        stop = min(start + block_size, s)
        if q_idx is None:
            rows = torch.arange(start, stop, device=q.device)  # [block]
            first, last = start, stop - 1
        else:
            rows = q_idx[..., start:stop]  # [block] or [b, block]
            first, last = int(rows.min()), int(rows.max())  # a host sync, with a cache only
        lo = 0 if window is None else max(0, first - window + 1)
        hi = last + 1 if causal else s_kv
        keys = torch.arange(lo, hi, device=q.device)  # [n_keys]
        allowed = torch.ones((), dtype=torch.bool, device=q.device)
        if causal:
            allowed = keys <= rows[..., None]  # [(b,) block, n_keys]
        if window is not None:
            allowed = allowed & (keys > rows[..., None] - window)
        if mask is not None:
            allowed = allowed & mask[:, start:stop, lo:hi]  # [b, block, n_keys]
        if allowed.dim() == 3:
            allowed = allowed[:, None]  # [b, 1, block, n_keys]
        qb, kb, vb = q[:, :, start:stop], k[:, :, lo:hi], v[:, :, lo:hi]
        if softcap is None:
            outs.append(F.scaled_dot_product_attention(
                qb, kb, vb, attn_mask=allowed, dropout_p=dropout_p, scale=scale
            ))  # [b, n_h, block, h_d]
        else:
            outs.append(eager_attention(
                qb, kb, vb, mask=allowed, scale=scale, softcap=softcap, dropout_p=dropout_p
            ))  # [b, n_h, block, h_d]
    return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]


def document_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    docs: Documents,
    dropout_p: float = 0.0,
    *,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    window: Optional[int] = None,
) -> torch.Tensor:
    """Causal attention inside each document; the window counts from each document's start.

    Args:
        q (torch.Tensor): ``[b, n_h, s, h_d]`` (positions already applied).
        k (torch.Tensor): ``[b, n_kv, s, h_d]``.
        v (torch.Tensor): ``[b, n_kv, s, h_d]``.
        docs (Documents): the documents of each row.
        dropout_p, scale, softcap, window: as ``attend``.

    Returns:
        torch.Tensor: ``[b, n_h, s, h_d]``, a transposed view of ``[b, s, n_h, h_d]``, so
        the output projection's reshape costs no copy.
    """
    b, n_h, s, h_d = q.shape
    if window is not None and window >= docs.max_len:
        window = None
    # [b, s, n, h_d]: views of the projections' own layout.
    q_t, k_t, v_t = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if softcap is None and _documents.uses_varlen(q_t, dropout_p):
        fn = _documents.load_varlen_attn()
        n_kv = k_t.shape[2]
        found = _documents.varlen_arguments(fn, gqa=n_kv != n_h, window=window, scale=scale)
        if found is not None:  # None: this torch's varlen_attn cannot take the window
            kwargs, native_gqa = found
            if n_kv != n_h and not native_gqa:  # older torch: one kv head per query head
                k_t = k_t.repeat_interleave(n_h // n_kv, dim=2)
                v_t = v_t.repeat_interleave(n_h // n_kv, dim=2)
                n_kv = n_h
            out = fn(
                q_t.reshape(b * s, n_h, h_d),
                k_t.reshape(b * s, n_kv, h_d),
                v_t.reshape(b * s, n_kv, h_d),
                docs.cu_seqlens,
                docs.cu_seqlens,
                docs.max_len,
                docs.max_len,
                **kwargs,
            )  # [b * s, n_h, h_d]
            return out.view(b, s, n_h, h_d).transpose(1, 2)
    if (softcap is not None or window is not None) and uses_flex(q, dropout_p):
        return flex_masked_attention(
            q, k, v, doc_ids=document_ids(docs, s, q.device), scale=scale, softcap=softcap,
            window=window,
        )
    k, v = repeat_kv(k, v, n_h)  # [b, n_h, s, h_d]
    rows = []
    for i, lengths in enumerate(docs.lengths):
        parts = zip(*(t[i : i + 1].split(lengths, dim=2) for t in (q, k, v)))
        rows.append(torch.cat([
            attend(qd, kd, vd, scale=scale, softcap=softcap, window=window,
                   dropout_p=dropout_p).transpose(1, 2)  # [1, len, n_h, h_d]
            for qd, kd, vd in parts
        ], dim=1))  # [1, s, n_h, h_d]
    out = torch.cat(rows) if len(rows) > 1 else rows[0]  # [b, s, n_h, h_d]
    return out.transpose(1, 2)  # [b, n_h, s, h_d]


def document_ids(docs: Documents, seq_len: int, device: torch.device) -> torch.Tensor:
    """``[b, s]``: the index of the document each token belongs to, within its row."""
    ids = [torch.arange(len(row)).repeat_interleave(torch.tensor(row)) for row in docs.lengths]
    return torch.stack(ids).view(len(ids), seq_len).to(device)


def uses_flex(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether FlexAttention serves ``q``: on CUDA, without attention dropout (it has none)."""
    return q.is_cuda and dropout_p == 0.0 and load_flex() is not None


_COMPILED_FLEX = None


def load_flex(compiled: bool = True):
    """``torch.nn.attention.flex_attention.flex_attention`` (compiled: its fused kernel;
    uncompiled it materialises every score), or None where torch lacks it. Imported on
    first use: the import pulls in the compiler stack."""
    global _COMPILED_FLEX
    try:
        from torch.nn.attention.flex_attention import flex_attention as flex
    except ImportError:  # pragma: no cover - depends on the torch version
        return None
    if not compiled:
        return flex
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex)
    return _COMPILED_FLEX


@functools.lru_cache(maxsize=None)
def soft_cap_mod(softcap: float) -> Callable:
    """The soft-cap as a FlexAttention ``score_mod``; one function per value, so the
    compiled kernel is not recompiled for a new closure on every call."""

    def soft_cap(score, b, h, q_idx, kv_idx):
        return softcap * torch.tanh(score / softcap)

    return soft_cap


def flex_masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    q_idx: Optional[torch.Tensor] = None,
    doc_ids: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    window: Optional[int] = None,
    compiled: Optional[bool] = None,
) -> torch.Tensor:
    """FlexAttention with the soft-cap as a ``score_mod`` and everything else in a block
    mask, so only blocks that hold an allowed (query, key) pair are computed.

    Args:
        q, k, v, mask, q_idx, scale, softcap, window: as ``attend``.
        doc_ids (Optional[torch.Tensor]): ``[b, s]`` document index of each token; keys
            of other documents are masked.
        compiled (Optional[bool]): run the compiled kernel; None means on CUDA only (the
            uncompiled one, for tests on CPU, computes every score).

    Returns:
        torch.Tensor: ``[b, n_h, s, h_d]``.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    b, n_h, s, _ = q.shape
    s_kv = k.shape[2]
    compiled = q.is_cuda if compiled is None else compiled
    if q_idx is not None:
        q_idx = q_idx.expand(b, s)
    causal = mask is None or window is not None

    def mask_mod(bi, hi, qi, kj):
        pos = qi if q_idx is None else q_idx[bi, qi]
        ok = kj <= pos if causal else kj >= 0
        if window is not None:
            ok = ok & (kj > pos - window)
        if mask is not None:
            ok = ok & mask[bi, qi, kj]
        if doc_ids is not None:
            ok = ok & (doc_ids[bi, qi] == doc_ids[bi, kj])
        return ok

    block_mask = create_block_mask(mask_mod, b, None, s, s_kv, device=q.device, _compile=compiled)
    return load_flex(compiled)(
        q, k, v,
        score_mod=None if softcap is None else soft_cap_mod(softcap),
        block_mask=block_mask,
        scale=scale,
        enable_gqa=k.shape[1] != n_h,
    )  # [b, n_h, s, h_d]
